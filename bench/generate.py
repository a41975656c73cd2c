"""Generated incidents at volume (1, 10, 30 million) for benchmarks, written straight into ``incidents``.

The demo drops (``loaders.demo``) go through the real loader at about 100,000 rows a second; benchmarks of
the views need tens of millions of rows, so this writes them server-side instead: one
``INSERT ... SELECT`` from ``generate_series`` per supplier month, two connections at once (the 2 cores).
Every index present during a load cuts its rate several-fold (issue 9), so a year that has no partition yet
is written into a new index-free table of the partition's name (with a CHECK of the year's bounds), its
indexes are built once it is full (the parent's own definitions, read from the catalogue) and it is then
ATTACHed as the year's partition, which finds the matching indexes and skips the validating scan; months
of a year that already has a partition are inserted through ``incidents`` as before. The rows look like the
demo data where the views care: police.uk (month precision, anonymised snap points reused by many
incidents) and the other suppliers in realistic shares (LFB, LAS, ISTV, TfL to the minute or month as their
``suppliers.time_precision`` says), each supplier's own categories with their theme flags from
``supplier_category_map``, spread over London's LSOAs with density falling away from central London and a
few stable hotspots, over whole years. Each supplier month gets a ``drops`` row (period, rows), so staleness
and "which drop" work as after real loads. Deterministic for a seed. Boundaries must be loaded first.
Progress (rows, rate, phase) is printed through ``log``.
"""
from __future__ import annotations

import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Callable

import psycopg2

from db import libpq_dsn

# Share of incidents per supplier (police.uk dominates, as in the GLA's data).
SUPPLIER_SHARES = {"police_uk": 0.78, "police_uk_stop_search": 0.04, "lfb": 0.08, "tfl_bus": 0.02,
                   "las": 0.05, "istv_ed": 0.03}
SNAP_POINTS_PER_LSOA = 8
POINT_URN_SIZE = 400_000  # rows of the weighted point table a random index picks from
CENTRE_BNG = (530_000, 180_500)  # Charing Cross

_SETUP = """
DROP TABLE IF EXISTS gen_points, gen_point_urn, gen_categories, gen_category_urn;
-- Snap points: a few random points in every LSOA; the LSOA's weight falls with distance from the centre,
-- and about one LSOA in ten is a hotspot.
CREATE UNLOGGED TABLE gen_points AS
SELECT a.code AS lsoa_code, a.msoa_code, a.borough_code, d.geom,
       ST_X(ST_Transform(d.geom, 4326)) AS longitude, ST_Y(ST_Transform(d.geom, 4326)) AS latitude,
       (1 + 25 * exp(-ST_Distance(ST_Centroid(a.geom), ST_SetSRID(ST_MakePoint(%(cx)s, %(cy)s), 27700)) / 7000.0))
       * CASE WHEN abs(hashtext(a.code || %(seed)s::text)) %% 10 = 0 THEN 4 ELSE 1 END
       * (0.3 + (abs(hashtext(a.code || d.path::text || %(seed)s::text)) %% 1000) / 1000.0) AS weight
FROM areas a, ST_Dump(ST_GeneratePoints(a.geom, %(per_lsoa)s, 1 + abs(hashtext(a.code || %(seed)s::text)))) AS d
WHERE a.level = 'lsoa';
CREATE UNLOGGED TABLE gen_point_urn AS
SELECT (row_number() OVER () - 1)::int AS idx, p.*
FROM (SELECT p.* FROM gen_points p,
             generate_series(1, greatest(1, round(p.weight * %(urn)s / (SELECT sum(weight) FROM gen_points))::int))
      ORDER BY p.borough_code, ST_GeoHash(ST_Transform(p.geom, 4326), 8)) p;
CREATE UNIQUE INDEX ON gen_point_urn (idx);
-- Each supplier's categories, weighted by a fixed pseudo-random 1..8, as an urn per supplier.
CREATE UNLOGGED TABLE gen_category_urn AS
SELECT m.supplier, (row_number() OVER (PARTITION BY m.supplier ORDER BY m.supplier_category, g) - 1)::int AS idx,
       m.supplier_category, m.category_id, m.theme_weapon, m.theme_dava, m.theme_young_victim, m.theme_arson
FROM supplier_category_map m,
     generate_series(1, 1 + abs(hashtext(m.supplier_category || %(seed)s::text)) %% 8) AS g
WHERE m.supplier = ANY(%(suppliers)s);
CREATE UNIQUE INDEX ON gen_category_urn (supplier, idx);
ANALYZE gen_point_urn; ANALYZE gen_category_urn;
"""

_INSERT = """
WITH r AS (
    SELECT floor(random() * %(points)s)::int AS point_idx, floor(random() * %(categories)s)::int AS category_idx,
           random() AS within_month, random() AS nte
    FROM generate_series(1, %(rows)s)
)
INSERT INTO {table} (id, supplier, drop_id, occurred_at, time_precision, category_id, supplier_category,
                       theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy, theme_arson,
                       geom, longitude, latitude, location_precision, lsoa_code, msoa_code, borough_code,
                       access_level)
SELECT nextval(%(id_sequence)s), %(supplier)s, %(drop_id)s,
       CASE %(precision)s
           WHEN 'month' THEN %(month_start)s::timestamptz
           WHEN 'day' THEN (date_trunc('day', (%(month_start)s::timestamptz + r.within_month
                                               * (%(month_end)s::timestamptz - %(month_start)s::timestamptz))
                                               AT TIME ZONE 'Europe/London')) AT TIME ZONE 'Europe/London'
           ELSE date_trunc('minute', %(month_start)s::timestamptz + r.within_month
                                     * (%(month_end)s::timestamptz - %(month_start)s::timestamptz))
       END,
       %(precision)s, c.category_id, c.supplier_category, c.theme_weapon, c.theme_dava, c.theme_young_victim,
       CASE WHEN r.nte < 0.06 THEN true END, c.theme_arson,
       p.geom, p.longitude, p.latitude, %(location_precision)s, p.lsoa_code, p.msoa_code, p.borough_code,
       %(access_level)s
FROM r
JOIN gen_point_urn p ON p.idx = r.point_idx
JOIN gen_category_urn c ON c.supplier = %(supplier)s AND c.idx = r.category_idx
ORDER BY r.point_idx  -- as the loaders write a drop: by borough, then along a Z-order curve (geohash)
"""


def _months(first_year: int, years: int) -> list[date]:
    return [date(y, m, 1) for y in range(first_year, first_year + years) for m in range(1, 13)]


def _year_bounds(year: int) -> tuple[str, str]:
    """The year's partition bounds, as ``safestats_ensure_incident_partitions`` sets them (Europe/London)."""
    return f"{year}-01-01 00:00 Europe/London", f"{year + 1}-01-01 00:00 Europe/London"


def _new_year_tables(cur, years: list[int]) -> list[int]:
    """Create an index-free table ``incidents_y<year>`` shaped like ``incidents`` for every year that has no
    partition yet, with a CHECK of the partition's bounds (so ATTACH need not scan it); the years made."""
    made = []
    for year in years:
        cur.execute("SELECT to_regclass(%s)", (f"incidents_y{year}",))
        if cur.fetchone()[0] is not None:
            continue
        low, high = _year_bounds(year)
        cur.execute(f"CREATE TABLE incidents_y{year} (LIKE incidents INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
                    f"CONSTRAINT generate_bounds CHECK (occurred_at >= %s::timestamptz AND occurred_at < %s::timestamptz))",
                    (low, high))
        made.append(year)
    return made


def _partition_index_statements(cur, year: int) -> list[str]:
    """The statements that give ``incidents_y<year>`` every index the partitioned ``incidents`` has, so ATTACH
    adopts them instead of building them under the parent's lock (the primary key as a constraint, since
    PostgreSQL attaches a constraint's index only to a constraint's)."""
    cur.execute("""SELECT pg_get_indexdef(i.indexrelid), c.contype, pg_get_constraintdef(c.oid)
                   FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                   WHERE i.indrelid = 'incidents'::regclass ORDER BY i.indisprimary DESC, i.indexrelid""")
    statements = []
    for definition, constraint_type, constraint in cur.fetchall():
        if constraint_type in ("p", "u"):
            statements.append(f"ALTER TABLE incidents_y{year} ADD {constraint}")
        else:
            # "CREATE INDEX name ON ONLY public.incidents USING ..." -> an unnamed index on the year's table.
            using = definition.split(" USING ", 1)[1]
            statements.append(f"CREATE INDEX ON incidents_y{year} USING {using}")
    return statements


def _attach_year(url: str, year: int, log: Callable[[str], None]) -> None:
    """Index the filled year's table, attach it as the year's partition and protect it as the migrations do."""
    low, high = _year_bounds(year)
    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            started = time.monotonic()
            for statement in _partition_index_statements(cur, year):
                cur.execute(statement)
            indexed = time.monotonic() - started
            cur.execute(f"ALTER TABLE incidents ATTACH PARTITION incidents_y{year} FOR VALUES FROM (%s) TO (%s)",
                        (low, high))
            cur.execute(f"ALTER TABLE incidents_y{year} DROP CONSTRAINT generate_bounds")
            cur.execute("SELECT safestats_protect_incident_partition(%s::regclass)", (f"incidents_y{year}",))
            cur.execute(f"ANALYZE incidents_y{year}")
            log(f"  indexed incidents_y{year} in {indexed:.0f} s, attached and analysed in "
                f"{time.monotonic() - started - indexed:.0f} s")
    finally:
        conn.close()


def generate_incidents(url: str, rows: int, first_year: int = 2021, years: int = 4, seed: int = 7,
                       workers: int = 2, months: list[date] | None = None,
                       log: Callable[[str], None] = print) -> int:
    """Write about ``rows`` incidents spread over ``years`` whole years from ``first_year`` (or over the given
    ``months``), one drop per supplier month; returns the number written. Safe to call again for more
    months (each call makes its own drops; years already partitioned are inserted through ``incidents``)."""
    months = months or _months(first_year, years)
    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT code, time_precision, access_level FROM suppliers WHERE code = ANY(%s)",
                    (list(SUPPLIER_SHARES),))
        suppliers = {code: (precision, level) for code, precision, level in cur.fetchall()}
        cur.execute(_SETUP, {"cx": CENTRE_BNG[0], "cy": CENTRE_BNG[1], "seed": seed, "per_lsoa": SNAP_POINTS_PER_LSOA,
                             "urn": POINT_URN_SIZE, "suppliers": list(suppliers)})
        cur.execute("SELECT count(*) FROM gen_point_urn")
        (points,) = cur.fetchone()
        cur.execute("SELECT supplier, count(*) FROM gen_category_urn GROUP BY 1")
        categories = dict(cur.fetchall())
        if not points:
            raise RuntimeError("no LSOAs in the areas table: load boundaries first (safestats boundaries)")
        cur.execute("SELECT pg_get_serial_sequence('incidents', 'id')")
        (id_sequence,) = cur.fetchone()
        new_years = _new_year_tables(cur, sorted({m.year for m in months}))
        for month in months:
            if month.year not in new_years:  # (a year a loader made is partitioned by month: its months too)
                cur.execute("""SELECT safestats_ensure_incident_partitions(
                                   %(t)s::timestamp AT TIME ZONE 'Europe/London',
                                   (%(t)s::timestamp + interval '1 month - 1 second') AT TIME ZONE 'Europe/London')""",
                            {"t": month})
    if new_years:
        log(f"  years {', '.join(map(str, new_years))}: written index-free, indexed and attached afterwards")
    share_total = sum(SUPPLIER_SHARES[s] for s in suppliers)
    jobs = []
    for month in months:
        for supplier, (precision, level) in suppliers.items():
            if categories.get(supplier):
                n = round(rows * SUPPLIER_SHARES[supplier] / share_total / len(months))
                jobs.append((month, supplier, precision, level, n))
    # Neighbouring jobs (run at the same time on the two connections) write different years' tables, so they
    # do not queue for the same table's extension lock.
    jobs.sort(key=lambda job: (job[0].month, job[1], job[0].year))
    done = [0, 0]
    lock = threading.Lock()
    started = time.monotonic()

    local = threading.local()
    connections = []

    def run(job):
        month, supplier, precision, level, n = job
        if not hasattr(local, "conn"):
            local.conn = psycopg2.connect(libpq_dsn(url))
            connections.append(local.conn)
        conn = local.conn
        month_end = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        table = f"incidents_y{month.year}" if month.year in new_years else "incidents"
        with conn.cursor() as c:
            # Seeded per supplier month, so the rows do not depend on which connection wrote them; the commit
            # need not wait for the WAL flush (a crash loses a benchmark's rows, not anyone's data).
            c.execute("SET jit = off; SET synchronous_commit = off; SELECT setseed(%s)",
                      ((zlib.crc32(f"{seed}|{month}|{supplier}".encode()) % 2000 - 1000) / 1000.0,))
            c.execute("""INSERT INTO drops (supplier, file_name, sha256, size_bytes, received_at, loaded_at, status,
                                            replace_key, rows_read, rows_loaded, period_start, period_end)
                         VALUES (%s, %s, md5(%s) || md5(%s), 0, now(), now(), 'loaded', %s, %s, %s, %s, %s - 1)
                         RETURNING id""",
                      (supplier, f"generated-{supplier}-{month:%Y-%m}.csv", f"{supplier}{month}{seed}",
                       f"{seed}{month}{supplier}{time.time()}", f"generated|{month:%Y-%m}|{time.time()}", n, n,
                       month, month_end))
            drop_id = c.fetchone()[0]
            c.execute(_INSERT.replace("{table}", table),
                      {"points": points, "categories": categories[supplier], "rows": n,
                       "supplier": supplier, "drop_id": drop_id, "precision": precision,
                       "id_sequence": id_sequence,
                       "month_start": f"{month} 00:00 Europe/London",
                       "month_end": f"{month_end} 00:00 Europe/London",
                       "location_precision": "snap_point" if supplier.startswith("police_uk") else "exact",
                       "access_level": level})
        conn.commit()
        with lock:
            done[0] += 1
            done[1] += n
            if done[0] % max(1, len(jobs) // 20) == 0 or done[0] == len(jobs):
                elapsed = time.monotonic() - started
                log(f"  generated {done[1]:,} of ~{rows:,} incidents ({done[0]}/{len(jobs)} supplier months) "
                    f"in {elapsed:.0f} s, {done[1] / max(elapsed, 1e-9):,.0f} rows/s")

    attached: list[int] = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, jobs))
        if new_years:
            index_started = time.monotonic()
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for year in pool.map(lambda y: (_attach_year(url, y, log), y)[1], new_years):
                    attached.append(year)
            log(f"  indexes and partitions: {time.monotonic() - index_started:.0f} s; "
                f"{done[1]:,} incidents in {time.monotonic() - started:.0f} s in all, "
                f"{done[1] / max(time.monotonic() - started, 1e-9):,.0f} rows/s")
    finally:
        for c in connections:
            c.close()
        with conn.cursor() as cur:
            # A year table left unattached by a failure would stop the loaders making that partition.
            for year in set(new_years) - set(attached):
                cur.execute("SELECT relispartition FROM pg_class WHERE oid = to_regclass(%s)", (f"incidents_y{year}",))
                if cur.fetchone() == (False,):
                    cur.execute(f"DROP TABLE incidents_y{year}")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS gen_points, gen_point_urn, gen_category_urn")
        cur.execute("ANALYZE incidents")
    conn.close()
    return done[1]
