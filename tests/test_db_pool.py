"""The pooled engine's disconnect handling (db/__init__.py): a connection idle in the pool for a while is pinged
before it is handed out and replaced when its server connection is gone; one used moments ago is handed out
without a ping (a round trip that, under load, queues behind every other)."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

import db
from tests.conftest import query


@pytest.fixture
def pool_of_one(db_url, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.3)
    engine = db._ping_connections_after_idle(create_engine(db.sqlalchemy_url(db_url), pool_size=1, max_overflow=0))
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping",
                        lambda dbapi_connection: pings.append(1) or real_ping(dbapi_connection))
    yield engine, pings
    engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar()


def test_a_connection_used_moments_ago_is_handed_out_without_a_ping(pool_of_one):
    engine, pings = pool_of_one
    first = _backend_pid(engine)
    assert [_backend_pid(engine) for _ in range(5)] == [first] * 5 and pings == []
    time.sleep(0.4)
    assert _backend_pid(engine) == first and pings == [1], "idle past the threshold: pinged, and alive"


def test_an_idle_connection_whose_server_side_went_away_is_replaced(pool_of_one, db_url):
    engine, pings = pool_of_one
    lost = _backend_pid(engine)
    assert query(db_url, "SELECT pg_terminate_backend(%s)", (lost,)) == [(True,)]
    time.sleep(0.4)
    replacement = _backend_pid(engine)      # no error: the ping found it gone and the pool connected anew
    assert replacement != lost and pings == [1]
