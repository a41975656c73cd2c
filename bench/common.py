"""What every benchmark shares: its own database, the load average to print beside the figures, percentiles.

Each benchmark works in a database of its own in the embedded cluster (or SAFESTATS_BENCH_DATABASE_URL),
never in the development or test databases; ``bench_database`` makes it (dropping an old one unless asked
to keep it) and ``drop_bench_database`` removes it when a benchmark is done with a large one (disk).
"""
from __future__ import annotations

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


def load_average() -> str:
    """How busy the machine was (the figures are only comparable on an otherwise idle machine)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
