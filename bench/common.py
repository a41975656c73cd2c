"""What every benchmark shares: its own database, the load average to print beside the figures, percentiles.

Each benchmark works in a database of its own in the embedded cluster (or SAFESTATS_BENCH_DATABASE_URL),
never in the development or test databases; ``bench_database`` makes it (dropping an old one unless asked
to keep it) and ``drop_bench_database`` removes it when a benchmark is done with a large one (disk).
"""
from __future__ import annotations

import json
import os


def bench_database(name: str, keep: bool = False) -> str:
    """URL of the benchmark database ``name``: SAFESTATS_BENCH_DATABASE_URL when set, else ``name`` in the
    embedded cluster, dropped and made anew unless ``keep`` (then reused when it exists)."""
    if os.environ.get("SAFESTATS_BENCH_DATABASE_URL"):
        return os.environ["SAFESTATS_BENCH_DATABASE_URL"]
    from safestats.embedded_pg import EmbeddedPostgres

    pg = EmbeddedPostgres.from_settings(log=lambda *a: None)
    pg.start()
    return pg.create_database(name, drop_existing=not keep)


def drop_bench_database(url: str) -> None:
    """Drop the benchmark database ``url`` names (not one given by SAFESTATS_BENCH_DATABASE_URL)."""
    if os.environ.get("SAFESTATS_BENCH_DATABASE_URL"):
        return
    from db import drop_database

    drop_database(url)


def run_sql(url: str, sql: str, params=None) -> list[tuple]:
    """Run one statement on a connection of its own and commit; the rows it returns (none for DELETE)."""
    import psycopg2

    from db import libpq_dsn

    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def load_average() -> str:
    """How busy the machine was (the figures are only comparable on an otherwise idle machine)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def timed(operation, repeats: int) -> list[float]:
    """Milliseconds taken by each of ``repeats`` calls of ``operation``."""
    import time

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        operation()
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- Dash callbacks as the browser POSTs them (bench/audit, bench/scale, bench/loadtest) ---------------------

def login_form_token(html: str) -> str:
    """The CSRF token of the sign-in form."""
    return html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def dashboard_callback_bodies(dash_app, qs: str, zoom: int = 15,
                              bounds=((51.52, -0.16), (51.56, -0.12))) -> dict[str, str]:
    """The JSON body the browser POSTs to ``/_dash-update-component`` for each callback of a filter change on
    the dashboard, keyed by its first output's id: ``sync_state`` (the state, keyed by the state error
    banner's id) and every data panel fed by the state stores, each given the state ``qs`` (a FilterState
    query string) as the stores hold it, the map at ``zoom`` over ``bounds``."""
    from dashapp import ids

    store = {"qs": qs, "error": None}
    # (id, property) of an output only that callback has: sync_state, then the panels.
    panels = [(ids.STATE_ERROR, "children"), (ids.HEADLINE, "children"), (ids.TIMESERIES, "figure"),
              (ids.CATEGORIES, "figure"), (ids.HOUR_DAY, "figure"), (ids.TOP_AREAS, "data"),
              (ids.MAP_LEGEND, "children"), (ids.MAP_HOTSPOTS, "data"), (ids.MAP_POINTS, "data")]
    bodies = {}
    for output, prop in panels:
        key = next(k for k in dash_app.callback_map if f"{output}.{prop}" in k.strip(".").split("..."))
        spec = dash_app.callback_map[key]
        outputs = [dict(zip(("id", "property"), part.rsplit(".", 1))) for part in key.strip(".").split("...")]

        def item(dep):
            if isinstance(dep["id"], str) and dep["id"].startswith("{"):
                return []
            name = f"{dep['id']}.{dep['property']}"
            value = store if dep["property"] == "data" and "state" in dep["id"] else \
                "?" + qs if name == f"{ids.URL}.search" else zoom if dep["property"] == "zoom" else \
                [list(bounds[0]), list(bounds[1])] if dep["property"] == "bounds" else None
            return {"id": dep["id"], "property": dep["property"], "value": value}
        first = spec["inputs"][0]
        bodies[output] = json.dumps({"output": key, "outputs": outputs if len(outputs) > 1 else outputs[0],
                                     "inputs": [item(d) for d in spec["inputs"]],
                                     "state": [item(d) for d in spec["state"]],
                                     "changedPropIds": [f"{first['id']}.{first['property']}"]})
    return bodies


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB (from /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (a gunicorn master's workers), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found
