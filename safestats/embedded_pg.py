"""The embedded default database: a private PostgreSQL 15 + PostGIS cluster that SafeStats runs itself.

With no ``DATABASE_URL`` set, ``EmbeddedPostgres.ensure_running()`` initialises a cluster under
``SAFESTATS_HOME/pg`` (git-ignored), starts it on a free loopback port, creates the ``safestats`` database
and ``CREATE EXTENSION postgis``, and returns its URL. Every step is idempotent, so re-running is safe.
When the server or PostGIS packages are missing it installs them from Debian's packages if it runs as
root, and otherwise stops with the exact command to run. As root, ``initdb`` and ``pg_ctl`` run as the
``postgres`` system user (PostgreSQL refuses to run as root) on a data folder that user owns.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

PG_MAJOR = "15"
APT_PACKAGES = ["postgresql-15", "postgresql-15-postgis-3"]
INSTALL_COMMAND = "sudo apt-get update && sudo apt-get install -y " + " ".join(APT_PACKAGES)
SUPERUSER = "safestats"
DEFAULT_DATABASE = "safestats"
FIRST_PORT = 55432


class EmbeddedDatabaseError(RuntimeError):
    """Raised with a message that says what to do next."""


def _is_root() -> bool:
    return os.geteuid() == 0


def find_pg_bin() -> Path | None:
    """The bin directory of PostgreSQL 15 (Debian layout), or None."""
    candidate = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
    if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
        return candidate
    return None


def postgis_installed() -> bool:
    return bool(glob.glob(f"/usr/share/postgresql/{PG_MAJOR}/extension/postgis.control"))


def install_packages(log=print) -> None:
    """Install PostgreSQL 15 and PostGIS 3 from Debian's packages (root only), without a system cluster."""
    if not _is_root():
        raise EmbeddedDatabaseError(
            "PostgreSQL 15 with PostGIS 3 is not installed, and installing it needs root. Run:\n"
            f"    {INSTALL_COMMAND}\n"
            "then run this command again (or set DATABASE_URL to use an existing PostGIS server).")
    # Debian's postgresql-common would otherwise create and start a 'main' system cluster we never use.
    conf = Path("/etc/postgresql-common/createcluster.conf")
    if not conf.exists():
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("# written by SafeStats: the project runs its own cluster\ncreate_main_cluster = false\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("Installing " + " ".join(APT_PACKAGES) + " from Debian's packages (one-off, a minute or two)...")
    # Wait for another apt/dpkg run (e.g. a second checkout installing at the same time) rather than fail.
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=600"]
    for cmd in (["apt-get", *wait_for_lock, "update", "-q"],
                ["apt-get", *wait_for_lock, "install", "-y", "-q", *APT_PACKAGES]):
        result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise EmbeddedDatabaseError(
                f"`{' '.join(cmd)}` failed (exit {result.returncode}). Its last lines:\n"
                + "\n".join(result.stdout.splitlines()[-15:])
                + f"\nFix the package sources, or install by hand: {INSTALL_COMMAND}")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _choose_port(start: int = FIRST_PORT) -> int:
    for port in range(start, start + 200):
        if _port_free(port):
            return port
    raise EmbeddedDatabaseError(f"No free TCP port on 127.0.0.1 in {start}..{start + 199} for the embedded database.")


@dataclass
class EmbeddedPostgres:
    """A project-private PostgreSQL cluster. ``home`` is SAFESTATS_HOME (default: <project>/.safestats)."""

    home: Path
    log: object = print

    @classmethod
    def from_settings(cls, settings=None, log=print) -> "EmbeddedPostgres":
        if settings is None:
            from safestats.config import get_settings

            settings = get_settings()
        return cls(home=settings.home, log=log)

    # -- where things live -------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "pg.json"

    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def _default_cluster_dir(self) -> Path:
        return self.home / "pg"

    def _cluster_dir_for_root(self) -> Path:
        """As root the server runs as 'postgres', which must be able to reach the data folder.

        A checkout under a private folder (mktemp -d is mode 700) is not reachable by that user; then the
        cluster lives under /var/lib/postgresql/safestats/<hash of the project home> instead, and pg.json in
        the project folder says where.
        """
        preferred = self._default_cluster_dir()
        preferred.mkdir(parents=True, exist_ok=True)
        probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(preferred)])
        if probe.returncode == 0:
            return preferred
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        fallback = Path("/var/lib/postgresql/safestats") / digest
        self.log(f"The postgres system user cannot reach {preferred}; keeping the cluster in {fallback}.")
        return fallback

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _run_as_owner(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if _is_root():
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    def _ensure_packages(self) -> Path:
        if find_pg_bin() is None or not postgis_installed():
            install_packages(self.log)
        bin_dir = find_pg_bin()
        if bin_dir is None or not postgis_installed():
            raise EmbeddedDatabaseError(f"PostgreSQL {PG_MAJOR} with PostGIS is still missing. Run: {INSTALL_COMMAND}")
        return bin_dir

    def initialise(self) -> dict:
        """Create the cluster if there is none; return its state (data dir, port, password)."""
        state = self._state()
        if state and (Path(state["data_dir"]) / "PG_VERSION").exists():
            return state
        bin_dir = self._ensure_packages()
        self.home.mkdir(parents=True, exist_ok=True)
        cluster_dir = self._cluster_dir_for_root() if _is_root() else self._default_cluster_dir()
        data_dir = cluster_dir / "data"
        if data_dir.exists() and not (data_dir / "PG_VERSION").exists():
            shutil.rmtree(data_dir)  # a half-made data dir from an interrupted initdb
        cluster_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        pwfile = cluster_dir / "initdb.pw"
        pwfile.write_text(password + "\n")
        if _is_root():
            pg = pwd.getpwnam("postgres")
            for path in (cluster_dir, pwfile):
                os.chown(path, pg.pw_uid, pg.pw_gid)
        self.log(f"Initialising the embedded PostgreSQL cluster in {data_dir} ...")
        result = self._run_as_owner([
            str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--pwfile", str(pwfile),
            "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
        ])
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedDatabaseError("initdb failed:\n" + result.stdout[-2000:])
        port = _choose_port()
        # Loopback only, no Unix socket (paths under deep project folders overflow the socket path limit).
        with open(data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "shared_buffers = '512MB'\nwork_mem = '32MB'\nmaintenance_work_mem = '256MB'\n"
                "max_wal_size = '4GB'\ncheckpoint_timeout = '15min'\n"
                "log_min_duration_statement = 2000\n"
                # A private single-node cluster has no replicas to feed: with minimal WAL, an index built in
                # the transaction that creates it (a staged month's, loaders/staging.py) and a COPY into a
                # table created in the same transaction skip the WAL (bench/README.md, "The month drop
                # streamed": COPY 1.36 -> 1.14 s, index builds 0.93 -> 0.81 s at 30M). A server with read
                # replicas (docs/scaling.md) keeps wal_level = replica.
                "wal_level = minimal\nmax_wal_senders = 0\n"
                # Dashboard and ingest statements are short; JIT compilation costs more than it saves.
                "jit = off\n")
        state = {"data_dir": str(data_dir), "port": port, "user": SUPERUSER, "password": password,
                 "bin_dir": str(bin_dir)}
        self.state_file.write_text(json.dumps(state, indent=2))
        self.state_file.chmod(0o600)
        return state

    def is_running(self) -> bool:
        state = self._state()
        if not state:
            return False
        bin_dir = find_pg_bin()
        if bin_dir is None:
            return False
        return self._run_as_owner([str(bin_dir / "pg_ctl"), "-D", state["data_dir"], "status"]).returncode == 0

    def start(self) -> dict:
        state = self.initialise()
        if self.is_running():
            return state
        if not _port_free(state["port"]):
            raise EmbeddedDatabaseError(
                f"Port {state['port']} on 127.0.0.1 is taken by another program, so the embedded database cannot "
                f"start. Free the port, or edit 'port' in {state['data_dir']}/postgresql.auto.conf and {self.state_file}.")
        logfile = Path(state["data_dir"]).parent / "server.log"
        self.log(f"Starting the embedded PostgreSQL on 127.0.0.1:{state['port']} (log: {logfile}) ...")
        result = self._run_as_owner([str(Path(state["bin_dir"]) / "pg_ctl"), "-D", state["data_dir"], "-l",
                                     str(logfile), "-w", "-t", "60", "start"])
        if result.returncode != 0:
            tail = ""
            try:
                tail = "\n".join(logfile.read_text().splitlines()[-15:])
            except OSError:
                pass
            raise EmbeddedDatabaseError(f"pg_ctl start failed:\n{result.stdout}\n{tail}")
        return state

    def stop(self) -> bool:
        """Stop the cluster if it runs; True if it was running."""
        state = self._state()
        if not state or not self.is_running():
            return False
        result = self._run_as_owner([str(Path(state["bin_dir"]) / "pg_ctl"), "-D", state["data_dir"], "-m",
                                     "fast", "-w", "stop"])
        if result.returncode != 0:
            raise EmbeddedDatabaseError("pg_ctl stop failed:\n" + result.stdout)
        return True

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        state = self._state()
        if not state:
            raise EmbeddedDatabaseError("The embedded database has not been initialised: run `safestats db start`.")
        return (f"postgresql://{state['user']}:{quote(state['password'], safe='')}@127.0.0.1:{state['port']}/"
                f"{database}")

    def create_database(self, name: str, drop_existing: bool = False) -> str:
        """Create a database with PostGIS in the running cluster; return its URL."""
        import psycopg2
        from psycopg2 import sql

        admin = psycopg2.connect(self.url("postgres"))
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                if drop_existing:
                    from db import forget_connections

                    forget_connections(name)
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            admin.close()
        conn = psycopg2.connect(self.url(name))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        finally:
            conn.close()
        return self.url(name)

    def ensure_running(self, database: str = DEFAULT_DATABASE) -> str:
        """Initialise and start the cluster if needed, make sure the database exists, and return its URL."""
        self.start()
        return self.create_database(database)

    def status(self) -> dict:
        state = self._state() or {}
        return {
            "initialised": bool(state),
            "running": self.is_running(),
            "data_dir": state.get("data_dir"),
            "port": state.get("port"),
            "url": self.url() if state else None,
        }


def main_error(exc: EmbeddedDatabaseError) -> None:
    print(f"safestats: {exc}", file=sys.stderr)
    sys.exit(2)
