"""Read API benchmark: what a personal-token call costs, and how fast records and aggregates leave.

Builds its own database (``safestats_bench_api`` in the embedded cluster, or SAFESTATS_BENCH_DATABASE_URL),
migrated to head, London's areas loaded, and ``--incidents`` synthetic police records in March 2024 spread
over every LSOA (inserted directly, rollups refreshed). One partner analyst holds a token; the rate limit is
lifted. Then times, through Flask's test client against the real app (web role, row-level security, audit):

* ``GET /api/v1/suppliers``: the token check, rate-limit claim, user load and audit row around a tiny answer
  (what every call pays);
* one rate-limit claim on its own (the upsert);
* ``GET /api/v1/aggregates`` for the month (borough x month x category, JSON and CSV) and at LSOA level;
* ``GET /api/v1/incidents`` pages of 5,000 records (JSON and CSV): ms per page and records per second.

Prints p50/p95 ms per operation and the load average.

    bench/api [--incidents 50000] [--repeats 30]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import bench_database, load_average, percentile, timed

REPO_ROOT = Path(__file__).resolve().parent.parent
EMAIL, PASSWORD = "bench.partner@bench.example", "a benchmark api passphrase"


def seed(url: str, n: int) -> None:
    """``n`` police records in March 2024, round-robin over London's LSOAs (at each LSOA's centroid)."""
    import psycopg2

    from db import libpq_dsn
    from safestats.rollups import refresh_rollups

    conn = psycopg2.connect(libpq_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions('2024-01-01', '2024-12-31')")
        cur.execute("""
            WITH lsoas AS (SELECT code, parent_code, borough_code, ST_PointOnSurface(geom) AS p,
                                  row_number() OVER (ORDER BY code) - 1 AS k, count(*) OVER () AS total
                           FROM areas WHERE level = 'lsoa'),
                 crime AS (SELECT array_agg(id ORDER BY id) AS ids FROM categories WHERE domain = 'crime')
            INSERT INTO incidents (supplier, drop_id, occurred_at, time_precision, category_id, supplier_category,
                                   geom, longitude, latitude, location_precision, lsoa_code, msoa_code,
                                   borough_code, access_level)
            SELECT 'police_uk', 1, timestamptz '2024-03-01 12:00+00' + (i %% 28) * interval '1 day', 'month',
                   crime.ids[1 + i %% cardinality(crime.ids)], 'bench', l.p, ST_X(ST_Transform(l.p, 4326)), ST_Y(ST_Transform(l.p, 4326)),
                   'snap_point', l.code, l.parent_code, l.borough_code, 10
            FROM generate_series(0, %s - 1) AS i JOIN lsoas l ON l.k = i %% l.total CROSS JOIN crime""", (n,))
    conn.close()
    refresh_rollups(url, trigger="bench api")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))

    from dashapp import create_app
    from db import get_engine, migrate
    from loaders.boundaries import load_boundaries
    from safestats import api_tokens, queries
    from safestats.accounts import save_account

    url = bench_database("safestats_bench_api")
    print("bench/api: migrating a fresh database, loading areas and incidents ...", flush=True)
    migrate.upgrade(url)
    load_boundaries(url, regions=("london",), log=lambda *a: None)
    seed(url, args.incidents)
    engine = get_engine(url)
    account = save_account(engine, email=EMAIL, display_name="Bench partner", organisation="GLA",
                           tier="partner_analyst", active=True, password=PASSWORD)
    app = create_app(url)
    app.config["SAFESTATS_API_CALLS_PER_MINUTE"] = 10**9
    token_row, token = api_tokens.create_token(app.extensions["safestats_engine"], account.id, "bench")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    month = "from=2024-03-01&to=2024-03-31"

    def get(path: str, expect_rows: int | None = None):
        def call():
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.status_code, response.get_data()[:200])
        return call

    def claim():
        api_tokens.claim_call(app.extensions["safestats_engine"], token_row.id, 10**9)

    page = min(5000, args.incidents)
    results = {
        "GET /api/v1/suppliers (token, rate limit, user, audit)": timed(get("/api/v1/suppliers"), args.repeats),
        "rate-limit claim (one upsert)": timed(claim, args.repeats),
        "GET /api/v1/aggregates, month, borough, JSON": timed(get(f"/api/v1/aggregates?{month}"), args.repeats),
        "GET /api/v1/aggregates, month, borough, CSV": timed(get(f"/api/v1/aggregates?{month}&format=csv"),
                                                             args.repeats),
        "GET /api/v1/aggregates, month, LSOA, JSON": timed(get(f"/api/v1/aggregates?{month}&level=lsoa"),
                                                           args.repeats),
    }
    queries.clear_caches()  # (records are not cached; aggregates above were, after their first call)
    records = {
        f"GET /api/v1/incidents, {page} records, JSON": timed(get(f"/api/v1/incidents?{month}&limit={page}"),
                                                              max(5, args.repeats // 3)),
        f"GET /api/v1/incidents, {page} records, CSV": timed(get(f"/api/v1/incidents?{month}&limit={page}"
                                                                 "&format=csv"), max(5, args.repeats // 3)),
    }
    print(f"\n{args.incidents:,} incidents; {load_average()}")
    print("| operation | n | p50 ms | p95 ms | records/s |\n|---|---|---|---|---|")
    for name, times in {**results, **records}.items():
        rate = f"{page / (percentile(times, 0.5) / 1000):,.0f}" if name in records else ""
        print(f"| {name} | {len(times)} | {percentile(times, 0.5):.1f} | {percentile(times, 0.95):.1f} | {rate} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
