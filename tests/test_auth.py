"""Password hashing and authentication against the real ``users`` table.

Checks that hashes are argon2id at the OWASP parameters, that every failure (unknown email, wrong password,
deactivated account) is the same ``None``, that a login is recorded, that a hash made with weaker
parameters is upgraded on the next successful login, and that ``next`` redirects stay on this site.
"""
from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import text

from dashapp import auth
from db import get_engine
from tests.conftest import query


@pytest.fixture
def engine(db_url):
    eng = get_engine(db_url)
    forget = text("DELETE FROM users WHERE email ILIKE :pattern")
    with eng.begin() as conn:
        conn.execute(forget, {"pattern": "%@auth-test.example"})
    yield eng
    with eng.begin() as conn:
        conn.execute(forget, {"pattern": "%@auth-test.example"})


def _stored_hash(db_url, email):
    return query(db_url, "SELECT password_hash FROM users WHERE lower(email) = lower(%s)", (email,))[0][0]


def test_upsert_stores_an_argon2id_hash_with_owasp_parameters(engine, db_url):
    user = auth.upsert_user(engine, "ana@auth-test.example", "correct horse battery", "Ana Analyst", "MOPAC",
                            "borough_analyst")
    assert (user.email, user.display_name, user.organisation, user.tier) == (
        "ana@auth-test.example", "Ana Analyst", "MOPAC", "borough_analyst")
    stored = _stored_hash(db_url, "ana@auth-test.example")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "correct horse battery" not in stored


def test_upsert_updates_the_same_user_case_insensitively(engine, db_url):
    first = auth.upsert_user(engine, "Bo@Auth-Test.example", "first password", "Bo", "GLA", "viewer")
    second = auth.upsert_user(engine, "bo@auth-test.example", "second password", "Bo B", "GLA", "admin")
    assert first.id == second.id
    assert query(db_url, "SELECT count(*) FROM users WHERE lower(email) = 'bo@auth-test.example'")[0][0] == 1
    assert auth.authenticate(engine, "bo@auth-test.example", "first password") is None
    assert auth.authenticate(engine, "BO@auth-test.example", "second password").tier == "admin"


@pytest.mark.parametrize("email,password,tier", [
    ("not-an-email", "long enough password", "viewer"),
    ("cy@auth-test.example", "short", "viewer"),
    ("cy@auth-test.example", "long enough password", "superuser"),
])
def test_upsert_refuses_bad_input(engine, email, password, tier):
    with pytest.raises(ValueError):
        auth.upsert_user(engine, email, password, "Cy", "GLA", tier)


def test_authenticate_accepts_the_right_password_and_records_the_login(engine, db_url):
    auth.upsert_user(engine, "di@auth-test.example", "a proper passphrase", "Di", "GLA", "viewer")
    assert query(db_url, "SELECT last_login_at FROM users WHERE email = 'di@auth-test.example'")[0][0] is None
    user = auth.authenticate(engine, "  DI@auth-test.example ", "a proper passphrase")
    assert user is not None and user.email == "di@auth-test.example" and user.is_active
    assert query(db_url, "SELECT last_login_at FROM users WHERE email = 'di@auth-test.example'")[0][0] is not None


def test_authenticate_refuses_wrong_password_unknown_email_and_inactive_users(engine, db_url):
    auth.upsert_user(engine, "ed@auth-test.example", "a proper passphrase", "Ed", "GLA", "viewer")
    assert auth.authenticate(engine, "ed@auth-test.example", "a proper passphrasE") is None
    assert auth.authenticate(engine, "nobody@auth-test.example", "a proper passphrase") is None
    assert auth.authenticate(engine, "ed@auth-test.example", "") is None
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET active = false WHERE email = 'ed@auth-test.example'"))
    assert auth.authenticate(engine, "ed@auth-test.example", "a proper passphrase") is None
    users = query(db_url, "SELECT id FROM users WHERE email = 'ed@auth-test.example'")
    assert auth.load_user_by_id(engine, str(users[0][0])) is None, "an inactive user's session must end"
    assert query(db_url, "SELECT last_login_at FROM users WHERE email = 'ed@auth-test.example'")[0][0] is None


def test_a_hash_with_old_parameters_is_upgraded_on_login(engine, db_url):
    auth.upsert_user(engine, "fi@auth-test.example", "a proper passphrase", "Fi", "GLA", "viewer")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("a proper passphrase")
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET password_hash = :h WHERE email = 'fi@auth-test.example'"), {"h": weak})
    assert auth.authenticate(engine, "fi@auth-test.example", "a proper passphrase") is not None
    upgraded = _stored_hash(db_url, "fi@auth-test.example")
    assert upgraded != weak and upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert auth.authenticate(engine, "fi@auth-test.example", "a proper passphrase") is not None


def test_load_user_by_id_ignores_garbage(engine):
    assert auth.load_user_by_id(engine, "not a number") is None
    assert auth.load_user_by_id(engine, None) is None


@pytest.mark.parametrize("target,expected", [
    ("/", "/"),
    ("/?borough=E09000007", "/?borough=E09000007"),
    (None, "/"),
    ("", "/"),
    ("https://evil.example/", "/"),
    ("//evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"),
    ("evil.example", "/"),
])
def test_next_redirect_only_to_local_paths(target, expected):
    assert auth.safe_next_path(target) == expected
