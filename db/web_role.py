"""The role the web app connects as (``safestats_web``) and the URL it connects with.

The web app never connects as the database owner: its engine logs in as ``safestats_web``, which owns
nothing, is neither superuser nor BYPASSRLS, and can read only what migration 0009 grants it, filtered by
row-level security (``db/sql/access_control_v1.sql``). Migrations, loaders, the scheduler and the CLI keep
the owner's URL (``db.database_url()``).

``web_database_url(owner_url)`` is ``SAFESTATS_WEB_DATABASE_URL`` when that is set (a production server,
where a DBA gives the role its password). Otherwise it is the owner's URL with the web role's name and a
generated password, kept like the embedded cluster's: created once in ``$SAFESTATS_HOME/web-role.json``
(mode 600), and set on the role (``ALTER ROLE ... LOGIN PASSWORD``, as the owner) when a process first asks
for the URL and cannot log in with it, so the role works on every database of the cluster and after a fresh
initdb alike. (Roles belong to the whole cluster: two checkouts with different homes sharing one server
would each set their own password; give such a server SAFESTATS_WEB_DATABASE_URL instead.)
"""
from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url

WEB_ROLE = "safestats_web"
_prepared: set[str] = set()
_lock = threading.Lock()


class WebRoleError(RuntimeError):
    """Raised with a message that says what to do next."""


def _password_file() -> Path:
    from safestats.config import get_settings

    return get_settings().home / "web-role.json"


def web_role_password() -> str:
    """The web role's generated password (created on first use, mode 600)."""
    path = _password_file()
    try:
        return json.loads(path.read_text())["password"]
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"role": WEB_ROLE, "password": password}, f)
        return password
    except FileExistsError:  # another process created it between the read and the open
        return json.loads(path.read_text())["password"]


def _can_log_in(url: str) -> bool:
    from db import libpq_dsn

    try:
        psycopg2.connect(libpq_dsn(url), connect_timeout=10).close()
        return True
    except psycopg2.OperationalError:
        return False


def web_database_url(owner_url: str) -> str:
    """The URL the web app connects with, for the database ``owner_url`` names (see the module docstring)."""
    configured = os.environ.get("SAFESTATS_WEB_DATABASE_URL")
    if configured:
        return configured
    from db import libpq_dsn, sqlalchemy_url

    password = web_role_password()
    url = make_url(sqlalchemy_url(owner_url)).set(username=WEB_ROLE, password=password)
    rendered = url.render_as_string(hide_password=False)
    with _lock:
        if rendered in _prepared:
            return rendered
        conn = psycopg2.connect(libpq_dsn(owner_url))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (WEB_ROLE,))
                row = cur.fetchone()
                if row is None:
                    raise WebRoleError(f"the role {WEB_ROLE} does not exist yet: run `safestats migrate` first")
                if row[0] or row[1]:
                    raise WebRoleError(f"the role {WEB_ROLE} is superuser or BYPASSRLS; as a superuser run "
                                       f"ALTER ROLE {WEB_ROLE} NOSUPERUSER NOBYPASSRLS")
                if not _can_log_in(rendered):  # set it only when needed: a role serves the whole cluster
                    cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(WEB_ROLE)),
                                (password,))
        except psycopg2.errors.InsufficientPrivilege as exc:
            raise WebRoleError(f"the database owner may not set the password of {WEB_ROLE}: give the role LOGIN "
                               f"and a password as a superuser and set SAFESTATS_WEB_DATABASE_URL to its URL") from exc
        finally:
            conn.close()
        _prepared.add(rendered)
    return rendered
