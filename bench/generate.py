"""Generated incidents at volume (1, 10, 30 million) for benchmarks, written straight into ``incidents``.

The demo drops (``loaders.demo``) go through the real loader at about 100,000 rows a second; benchmarks of
the views need tens of millions of rows, so this writes them server-side instead: one
``INSERT ... SELECT`` from ``generate_series`` per supplier month, two connections at once (the 2 cores),
about a minute per ten million rows on an idle machine. The rows look like the demo data where the views
care: police.uk (month precision, anonymised snap points reused by many incidents) and the other suppliers
in realistic shares (LFB, LAS, ISTV, TfL to the minute or month as their ``suppliers.time_precision`` says),
each supplier's own categories with their theme flags from ``supplier_category_map``, spread over London's
LSOAs with density falling away from central London and a few stable hotspots, over whole years. Each
supplier month gets a ``drops`` row (period, rows), so staleness and "which drop" work as after real loads.
Deterministic for a seed. Boundaries must be loaded first.
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
      ORDER BY p.lsoa_code) p;
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
INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id, supplier_category,
                       theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy, theme_arson,
                       geom, longitude, latitude, location_precision, lsoa_code, msoa_code, borough_code,
                       access_level)
SELECT %(supplier)s, %(drop_id)s,
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
"""


def _months(first_year: int, years: int) -> list[date]:
    return [date(y, m, 1) for y in range(first_year, first_year + years) for m in range(1, 13)]


def generate_incidents(url: str, rows: int, first_year: int = 2021, years: int = 4, seed: int = 7,
                       workers: int = 2, months: list[date] | None = None,
                       log: Callable[[str], None] = print) -> int:
    """Write about ``rows`` incidents spread over ``years`` whole years from ``first_year`` (or over the given
    ``months``), one drop per supplier month; returns the number written. Safe to call again for more
    months (each call makes its own drops)."""
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
        first, last = months[0], months[-1]
        cur.execute("SELECT safestats_ensure_incident_partitions(make_timestamptz(%s, %s, 1, 0, 0, 0, 'Europe/London'),"
                    " make_timestamptz(%s, %s, 28, 0, 0, 0, 'Europe/London'))",
                    (first.year, first.month, last.year, last.month))
    share_total = sum(SUPPLIER_SHARES[s] for s in suppliers)
    jobs = []
    for month in months:
        for supplier, (precision, level) in suppliers.items():
            if categories.get(supplier):
                n = round(rows * SUPPLIER_SHARES[supplier] / share_total / len(months))
                jobs.append((month, supplier, precision, level, n))
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
        with conn.cursor() as c:
            # Seeded per supplier month, so the rows do not depend on which connection wrote them.
            c.execute("SET jit = off; SELECT setseed(%s)",
                      ((zlib.crc32(f"{seed}|{month}|{supplier}".encode()) % 2000 - 1000) / 1000.0,))
            c.execute("""INSERT INTO drops (supplier, file_name, sha256, size_bytes, received_at, loaded_at, status,
                                            replace_key, rows_read, rows_loaded, period_start, period_end)
                         VALUES (%s, %s, md5(%s) || md5(%s), 0, now(), now(), 'loaded', %s, %s, %s, %s, %s - 1)
                         RETURNING id""",
                      (supplier, f"generated-{supplier}-{month:%Y-%m}.csv", f"{supplier}{month}{seed}",
                       f"{seed}{month}{supplier}{time.time()}", f"generated|{month:%Y-%m}|{time.time()}", n, n,
                       month, month_end))
            drop_id = c.fetchone()[0]
            c.execute(_INSERT, {"points": points, "categories": categories[supplier], "rows": n,
                                "supplier": supplier, "drop_id": drop_id, "precision": precision,
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

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, jobs))
    finally:
        for c in connections:
            c.close()
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS gen_points, gen_point_urn, gen_category_urn")
        cur.execute("ANALYZE incidents")
    conn.close()
    return done[1]
