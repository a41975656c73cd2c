"""Database access: the SQLAlchemy engine for the configured database, and raw psycopg2 connections.

``database_url()`` is the one answer to "which database?": ``DATABASE_URL`` when set, otherwise the
embedded cluster, which it starts if needed. The web app and query layer use the pooled SQLAlchemy
engine; the loaders use a raw psycopg2 connection because they stream COPY. The web app's engine connects as
the web role instead (``db.web_role.web_database_url``). Every engine starts each transaction in the scope of
the user the code acts as (``safestats.db_scope``), so row-level security sees who is asking.
"""
from __future__ import annotations

import time
import weakref
from functools import lru_cache
from pathlib import Path

import psycopg2
from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine, make_url

SQL_DIR = Path(__file__).resolve().parent / "sql"


def database_url() -> str:
    from safestats.config import get_settings

    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    from safestats.embedded_pg import EmbeddedPostgres

    return EmbeddedPostgres.from_settings(settings).ensure_running()


def sqlalchemy_url(url: str) -> str:
    """Normalise postgres:// and postgresql:// URLs to the psycopg2 driver SQLAlchemy should use."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def libpq_dsn(url: str) -> str:
    """A libpq connection string for psycopg2 from a SQLAlchemy-style URL."""
    u = make_url(sqlalchemy_url(url))
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


# A pooled connection is pinged before it is handed out only when it has sat unused for this long. A ping is a
# round trip, and under load every round trip queues for the CPU behind the others: SQLAlchemy's pool_pre_ping
# (a ping at every checkout) was a third of a Dash callback's time with 50 analysts at 30M (bench/README.md).
# A connection used seconds ago is alive unless the server went away in those seconds; an idle one (a server
# restarted overnight, a connection dropped by the network) is pinged, and replaced when the ping fails. The
# price: when the server goes away with connections used in the last seconds, the first statement on one of
# them fails (one request per pool), and SQLAlchemy then replaces every connection of that pool.
PING_AFTER_IDLE_S = 10.0


def _ping_connections_after_idle(engine: Engine) -> Engine:
    """Check out pooled connections as pool_pre_ping does, but ping only those idle PING_AFTER_IDLE_S or more
    (SQLAlchemy's "pessimistic" disconnect handling through the checkout event: a DisconnectionError there
    makes the pool discard the connection and hand out a new one)."""
    @event.listens_for(engine, "checkin")
    def remember_checkin(dbapi_connection, record):
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection, record, proxy):
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_S:
            return      # new, or in use moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.DisconnectionError(f"idle pooled connection lost: {error}") from error
            raise
    return engine


# Every engine get_engine made and still in use, so a dropped database's pools can be emptied (weak: an engine
# dropped from get_engine's cache goes when nothing else holds it).
_engines_made: "weakref.WeakSet[Engine]" = weakref.WeakSet()


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    from safestats import db_scope
    from safestats.config import get_settings

    settings = get_settings()
    engine = db_scope.install(_ping_connections_after_idle(create_engine(
        sqlalchemy_url(url or database_url()), future=True, pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow)))
    _engines_made.add(engine)
    return engine


def forget_connections(database: str) -> None:
    """Close the pooled connections every engine of this process holds to ``database`` (about to be dropped,
    or just dropped): they are dead, and one used moments ago would be handed out without a ping."""
    for engine in list(_engines_made):
        if engine.url.database == database:
            engine.dispose()


def get_web_engine(owner_url: str | None = None) -> Engine:
    """The engine the web app reads through: the web role, on the database ``owner_url`` (default: configured)."""
    from db.web_role import web_database_url

    return get_engine(web_database_url(owner_url or database_url()))


def connect(url: str | None = None):
    """A raw psycopg2 connection (autocommit off) for loaders that stream COPY."""
    return psycopg2.connect(libpq_dsn(url or database_url()))


def read_sql(name: str) -> str:
    """The text of a SQL file kept under db/sql/ (views and functions live there, not in Python)."""
    return (SQL_DIR / name).read_text()


def drop_database(url: str) -> None:
    """Drop the database ``url`` names, connected to the same server's ``postgres`` database (tests' and
    benchmarks' throw-away databases)."""
    parsed = make_url(sqlalchemy_url(url))
    forget_connections(parsed.database)
    conn = psycopg2.connect(libpq_dsn(parsed.set(database="postgres").render_as_string(hide_password=False)))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    finally:
        conn.close()
