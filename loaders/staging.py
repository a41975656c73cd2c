"""Staging a large month drop over several connections: the COPY and the index builds run side by side.

A drop that opens its month (``pipeline.fresh_month_candidate``) is written into a table of its own, which
becomes the month's partition. In one transaction that is one backend, so one core: its COPY (about 0.9 s for
a 300,000-row police.uk month) and then its four index builds (about 0.7 s) one after the other. A
``MonthStager`` holds STAGING_CONNECTIONS helper connections of a writer. While the drop's transaction holds
the month's lock and its drop row, the helpers, in autocommit, make the staging table
(``safestats_stage_incident_month``, ``db/sql/incident_partitions_v4.sql``), COPY a share of the rows each
(``LocatedDrop.copy_streams``), then build its indexes, taking them in turn. The drop's transaction then
attaches the table, with its indexes, as the month's partition, and commits as before: analysts see the whole
drop or nothing. The staging table is committed early but nobody else reads it (it is not granted and has
row-level security forced); if the drop fails, ``discard`` drops it once the drop's transaction has rolled
back, and a table left by a killed loader is dropped by the next staging.
"""
from __future__ import annotations

import queue
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Callable

import psycopg2

# Helper connections per writer: a 2-core machine runs a COPY or an index build on each core.
STAGING_CONNECTIONS = 2


class MonthStager:
    """A writer's helper connections for staging month drops, opened when its first month is staged."""

    def __init__(self, dsn: str):
        self._dsn = dsn
        self._conns: list = []
        self._pool: ThreadPoolExecutor | None = None
        self._staged_at: datetime | None = None     # the month staged for the drop being written, until it lands

    def _connections(self) -> list:
        if any(conn.closed for conn in self._conns):
            self.close()        # one was lost (a server restart, a failed drop's broken connection): anew
        if not self._conns:
            for _ in range(STAGING_CONNECTIONS):
                conn = psycopg2.connect(self._dsn)
                conn.autocommit = True
                with conn.cursor() as cur:
                    # Each helper is one of the cores already: parallel index workers would only contend.
                    cur.execute("SET jit = off; SET max_parallel_maintenance_workers = 0")
                self._conns.append(conn)
            self._pool = ThreadPoolExecutor(max_workers=STAGING_CONNECTIONS, thread_name_prefix="month-stager")
        return self._conns

    def stage(self, first_at: datetime, streams: list, meanwhile: Callable[[], None] = lambda: None) -> int | None:
        """Fill and index the staging table of ``first_at``'s month from ``streams`` (one per helper, the drop
        id already set); the rows COPYed, or None when the month has its partition already (nothing staged).
        ``meanwhile()`` runs on the calling thread while the helpers COPY (the caller's own writes, which
        would otherwise wait for the staging). The caller's transaction must hold the month's advisory lock;
        on failure, the caller rolls it back, then ``discard()`` drops what was staged (commit_drop does
        both)."""
        conns = self._connections()
        if len(streams) > len(conns):
            raise ValueError(f"{len(streams)} COPY streams for {len(conns)} staging connections")
        with conns[0].cursor() as cur:
            cur.execute("SELECT safestats_stage_incident_month(%s)", (first_at,))
            staged = cur.fetchone()[0]
        if staged is None:
            return None
        self._staged_at = first_at
        try:
            copies = self._start_on_helpers([
                (lambda conn, stream=stream: _copy_into(conn, staged, stream)) for stream in streams])
            try:
                meanwhile()
            except BaseException:
                self._cancel(copies)
                raise
            copied = self._finish(copies)
            with conns[0].cursor() as cur:
                cur.execute("SELECT safestats_staged_month_index_statements(%s)", (staged,))
                builds: queue.Queue = queue.Queue()
                for (statement,) in cur.fetchall():
                    builds.put(statement)
            self._run_on_helpers([lambda conn: _build_indexes(conn, builds)] * len(conns))
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return sum(copied)

    def _run_on_helpers(self, jobs: list) -> list:
        """Run job k on helper k, side by side; their results (see ``_finish``)."""
        return self._finish(self._start_on_helpers(jobs))

    def _start_on_helpers(self, jobs: list) -> list:
        return [self._pool.submit(job, conn) for job, conn in zip(jobs, self._conns)]

    def _finish(self, futures: list) -> list:
        """The helpers' results. When one fails, the others' statements are cancelled (so a failed COPY does
        not wait for the other share to finish) and its error raised."""
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            self._cancel(futures)
            raise failed[0].exception()
        return [f.result() for f in futures]

    def _cancel(self, futures: list) -> None:
        """Cancel the helpers' statements still running, and wait for them to stop."""
        for future, conn in zip(futures, self._conns):
            if not future.done():
                conn.cancel()
        wait(futures)

    def landed(self) -> None:
        """The drop committed: its staging table is the month's partition now."""
        self._staged_at = None

    def discard(self) -> None:
        """Drop the staging table of the drop being written, if any (after its transaction rolled back, which
        releases its locks on the table). Best effort: a table left behind is dropped by the next staging."""
        if self._staged_at is None:
            return
        staged_at, self._staged_at = self._staged_at, None
        try:
            with self._conns[0].cursor() as cur:
                cur.execute("SELECT format('DROP TABLE IF EXISTS %%I', safestats_staged_month_table(%s))",
                            (staged_at,))
                cur.execute(cur.fetchone()[0])
        except psycopg2.Error:
            pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for conn in self._conns:
            conn.close()
        self._conns = []


def _copy_into(conn, table: str, stream) -> int:
    from loaders.pipeline import copy_incident_rows

    with conn.cursor() as cur:
        return copy_incident_rows(cur, table, stream)


def _build_indexes(conn, builds: queue.Queue) -> None:
    """Build indexes from the shared queue until it is empty (each statement commits on its own)."""
    with conn.cursor() as cur:
        while True:
            try:
                statement = builds.get_nowait()
            except queue.Empty:
                return
            cur.execute(statement)
