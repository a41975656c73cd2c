"""Settings read from the environment, in one place, with the defaults a fresh checkout needs.

Everything a deployment may change is an environment variable (documented in the README): where the
database is (``DATABASE_URL``; unset means the embedded cluster under ``SAFESTATS_HOME``), which boundary
areas are in scope, the base-map tiles, the Flask secret, the suppliers' incoming drop folders, and the
log-in settings (Secure cookies, session timeouts, the failed-sign-in limit) and the connection pool's size. Code asks ``get_settings()``; nothing else reads
``os.environ`` for these names.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# OpenStreetMap's standard tiles; analysts on a locked-down network point this at their own tile server.
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = "&copy; OpenStreetMap contributors"


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    home: Path
    boundary_regions: tuple[str, ...]
    area_snap_tolerance_m: float
    tile_url: str
    tile_attribution: str
    secret_key: str
    host: str = "127.0.0.1"
    port: int = 8050
    # Scheduled ingest: suppliers' drop folders (<incoming>/<supplier>/) and how late a drop may be before
    # the supplier is shown as late (on top of suppliers.expected_cadence).
    incoming: Path | None = None
    cadence_grace_days: float = 7.0
    # Log-in and sessions: cookies only over HTTPS (browsers treat http://127.0.0.1 and localhost as secure
    # too, so the demo works), sessions end after this long idle or this long in all, and an account is
    # locked for a while after this many failed sign-ins in a row.
    secure_cookies: bool = True
    session_idle_minutes: float = 30.0
    session_max_hours: float = 12.0
    login_max_failures: int = 10
    login_lockout_minutes: float = 15.0
    # The read API (/api/v1/): calls per personal token per minute, counted in PostgreSQL (every worker).
    api_calls_per_minute: int = 120
    # Each SQLAlchemy engine's connection pool (per process): SQLAlchemy's defaults unless set;
    # ``safestats serve --workers`` sets them from safestats.serving.pool_plan for every gunicorn worker.
    db_pool_size: int = 5
    db_max_overflow: int = 10
    # Each web process reads the hotspot layers' grid months into memory when it starts (in the background),
    # so its first hotspot layer does not wait seconds for them; `safestats serve` turns it on, tests leave
    # it off (their apps come and go with the data).
    warm_hotspots: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def uses_embedded_database(self) -> bool:
        return not self.database_url


def _secret_key(home: Path) -> str:
    """A stable per-installation secret: from SAFESTATS_SECRET_KEY, else generated once under home."""
    if os.environ.get("SAFESTATS_SECRET_KEY"):
        return os.environ["SAFESTATS_SECRET_KEY"]
    path = home / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        home.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        path.write_text(key)
        path.chmod(0o600)
        return key


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    home = Path(os.environ.get("SAFESTATS_HOME", PROJECT_ROOT / ".safestats")).resolve()
    regions = tuple(
        r.strip() for r in os.environ.get("SAFESTATS_BOUNDARY_REGIONS", "london").split(",") if r.strip()
    )
    return Settings(
        database_url=os.environ.get("DATABASE_URL") or None,
        home=home,
        boundary_regions=regions,
        area_snap_tolerance_m=float(os.environ.get("SAFESTATS_AREA_SNAP_TOLERANCE_M", "200")),
        tile_url=os.environ.get("SAFESTATS_TILE_URL", DEFAULT_TILE_URL),
        tile_attribution=os.environ.get("SAFESTATS_TILE_ATTRIBUTION", DEFAULT_TILE_ATTRIBUTION),
        secret_key=_secret_key(home),
        host=os.environ.get("SAFESTATS_HOST", "127.0.0.1"),
        port=int(os.environ.get("SAFESTATS_PORT", "8050")),
        incoming=Path(os.environ.get("SAFESTATS_INCOMING") or home / "incoming").resolve(),
        cadence_grace_days=float(os.environ.get("SAFESTATS_CADENCE_GRACE_DAYS", "7")),
        secure_cookies=_flag("SAFESTATS_SECURE_COOKIES", True),
        session_idle_minutes=float(os.environ.get("SAFESTATS_SESSION_IDLE_MINUTES", "30")),
        session_max_hours=float(os.environ.get("SAFESTATS_SESSION_MAX_HOURS", "12")),
        login_max_failures=int(os.environ.get("SAFESTATS_LOGIN_MAX_FAILURES", "10")),
        login_lockout_minutes=float(os.environ.get("SAFESTATS_LOGIN_LOCKOUT_MINUTES", "15")),
        api_calls_per_minute=int(os.environ.get("SAFESTATS_API_CALLS_PER_MINUTE", "120")),
        db_pool_size=int(os.environ.get("SAFESTATS_DB_POOL_SIZE", "5")),
        db_max_overflow=int(os.environ.get("SAFESTATS_DB_MAX_OVERFLOW", "10")),
        warm_hotspots=_flag("SAFESTATS_WARM_HOTSPOTS", False),
    )
