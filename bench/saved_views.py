"""Saved views benchmark: what pinning a view "as at" a drop costs each filter change, and that it holds.

Builds its own database (``safestats_bench_saved_views`` in the embedded cluster, or
SAFESTATS_BENCH_DATABASE_URL) as ``bench/dashboard`` does (migrations, London's boundaries, ``--rows``
generated incidents over 48 months of demo drops through the real loader, rollups refreshed). The watermark
is the newest drop of the month before the last, so a pinned view leaves the last month out. For each of
``bench/dashboard``'s typical filter changes it times every panel's data and presentation cold (panel
cache cleared), following the latest data and pinned, and checks that the pinned headline equals the
headline with the dates cut to the watermark's months. Then the saved-view operations a user waits for:
save, list, open (fetch and reduce to the user's tier).

    bench/saved_views [--rows 300000] [--repeats 5] [--keep] [--tier TIER]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.common import bench_database, load_average, percentile, timed
from bench.dashboard import all_panels, filter_changes, prepare

REPO_ROOT = Path(__file__).resolve().parent.parent


def _cold(engine, state, user, repeats: int) -> list[float]:
    from safestats import queries

    times = []
    for _ in range(repeats):
        queries.clear_caches()
        queries.areas(engine), queries.taxonomy(engine)   # per-process reference data, loaded once per worker
        started = time.perf_counter()
        all_panels(engine, state, user)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="reuse the database when it is there (no reload)")
    parser.add_argument("--tier", default="partner_analyst")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))

    from sqlalchemy import text

    from dashapp.auth import load_user_by_id
    from db import get_engine, get_web_engine
    from safestats import queries, saved_views
    from safestats.accounts import save_account

    url = bench_database("safestats_bench_saved_views", keep=args.keep)
    owner_engine = get_engine(url)
    with owner_engine.connect() as conn:
        loaded = conn.execute(text("SELECT to_regclass('incidents') IS NOT NULL")).scalar() and \
            conn.execute(text("SELECT count(*) FROM incidents")).scalar()
    if not (args.keep and loaded):
        prepare(url, args.rows)
    account = save_account(owner_engine, email=f"bench.{args.tier}@bench.invalid", display_name="Bench",
                           organisation="GLA", tier=args.tier, password="saved views bench passphrase", active=True)
    user = load_user_by_id(owner_engine, account.id)
    engine = get_web_engine(url)
    with owner_engine.connect() as conn:
        n_incidents = conn.execute(text("SELECT count(*) FROM incidents")).scalar()
        last_month = conn.execute(text("SELECT max(period_start) FROM drops WHERE status = 'loaded'")).scalar()
        watermark = conn.execute(text("SELECT max(id) FROM drops WHERE status = 'loaded' AND period_start < :m"),
                                 {"m": last_month}).scalar()
    covered_end = max(end for ranges in queries.as_at_coverage(engine, watermark).values() for _, end in ranges)
    print(f"\n{n_incidents:,} incidents; pinned as at drop {watermark} (months to {covered_end:%b %Y}); "
          f"{args.repeats} cold runs per filter change, asked by a {args.tier} through the web role; "
          f"{load_average()}\n")

    print(f"{'filter change':34} {'latest p50':>10} {'p95':>6} {'pinned p50':>10} {'p95':>6}  pinned headline")
    latest_all, pinned_all = [], []
    for name, state in filter_changes(engine).items():
        pinned = replace(state, as_at=watermark)
        latest_times, pinned_times = _cold(engine, state, user, args.repeats), _cold(engine, pinned, user, args.repeats)
        latest_all += latest_times
        pinned_all += pinned_times
        try:
            held = queries.headline(engine, pinned, user).total
            period = queries.current_period(engine, pinned)
            cut = replace(state, date_from=period.start, date_to=min(period.end, covered_end))
            check = "= cut to its months" if held == queries.headline(engine, cut, user).total else "DIFFERS"
        except queries.AccessRefused:
            check = "(refused to this tier)"
        print(f"{name:34} {statistics.median(latest_times):10.0f} {percentile(latest_times, 0.95):6.0f} "
              f"{statistics.median(pinned_times):10.0f} {percentile(pinned_times, 0.95):6.0f}  {check}")
    print(f"{'all filter changes':34} {statistics.median(latest_all):10.0f} {percentile(latest_all, 0.95):6.0f} "
          f"{statistics.median(pinned_all):10.0f} {percentile(pinned_all, 0.95):6.0f}")

    from safestats.filters import FilterState

    state = FilterState(borough_code="E09000007", map_layers=("points",))
    saved = saved_views.save_view(engine, user, "bench", "", state, pin=True)
    operations = {
        "save a view": lambda: saved_views.delete_view(engine, user, saved_views.save_view(
            engine, user, "bench copy", "", state, pin=True).id),
        "list my views and shared": lambda: saved_views.list_views(engine, user),
        "open (fetch + reduce)": lambda: saved_views.reduce_state(
            engine, saved_views.get_view(engine, user, saved.id).state, user),
    }
    print(f"\n{'saved-view operation':34} {'p50 ms':>10} {'p95':>6}")
    for name, call in operations.items():
        times = timed(call, max(args.repeats * 4, 20))
        print(f"{name:34} {statistics.median(times):10.1f} {percentile(times, 0.95):6.1f}")
    saved_views.delete_view(engine, user, saved.id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
