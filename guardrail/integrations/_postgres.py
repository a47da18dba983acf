"""Escalations in a PostgreSQL checkpoint database, shared by many worker processes (the ``postgres`` extra).

Imported only for a ``postgresql://`` URL (:func:`guardrail.integrations.escalations.open_saver`), so that SQLite
users need neither ``psycopg`` nor ``langgraph-checkpoint-postgres``. What it adds to LangGraph's ``PostgresSaver``:

- the connection LangGraph requires (``autocommit=True``: its ``setup()`` creates indexes ``CONCURRENTLY``, which
  cannot run inside a transaction; ``row_factory=dict_row``: it reads rows by column name; ``prepare_threshold=0``,
  as ``PostgresSaver.from_conn_string`` sets it), a connection timeout, and, for reading, a session in which every
  transaction is read-only (``default_transaction_read_only``), so listing can never write;
- a database that is not a checkpoint database is refused and left unchanged: tables of the checkpointer's names
  that are someone else's always; a database without the tables when it must already be one (``list``,
  ``resolve``, ``serve``);
- ``setup()`` (creating the tables, running migrations) only when needed and one process at a time, under a
  PostgreSQL advisory lock: two workers started together on a fresh database would otherwise both create the
  same tables and migration rows, and one of them fail;
- :func:`thread_lock`: one resolver at a time per thread across processes (an advisory lock keyed by the thread
  id), so an escalation answered by two reviewers at once is resumed once and refused to the other;
- :func:`pending_checkpoints`: the newest checkpoint of each thread that has an interrupt pending, found by one
  query instead of reading every checkpoint of every thread.

Locks are taken by polling ``pg_try_advisory_lock``: a session blocked in ``pg_advisory_lock`` keeps a snapshot
open, ``CREATE INDEX CONCURRENTLY`` in the ``setup()`` of the process holding the lock waits for it, and PostgreSQL
ends one of them with "deadlock detected" (seen with workers started together on a fresh database).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from ..errors import InputError
from ._database import redacted, scrubbed

__all__ = ["SETUP_TIMEOUT", "THREAD_LOCK_TIMEOUT", "open_postgres_saver", "pending_checkpoints", "thread_lock"]

SETUP_TIMEOUT = 120.0
"""How long a process waits for another one's ``setup()`` of the same database (seconds)."""

THREAD_LOCK_TIMEOUT = 300.0
"""How long a resolver waits while another process resumes the same thread (seconds)."""

CONNECT_TIMEOUT = 10
"""libpq's ``connect_timeout`` unless the URL sets one: a server that does not answer is an error, not a hang."""

# Advisory lock keys (two int4 each): a constant "guardrail" class, then 0 for set-up or the thread id's CRC-32.
_SETUP_LOCK = (0x67726400, 0)
_THREAD_LOCK = 0x67726401
_POLL = 0.05

# The checkpointer's tables and the columns guardrail reads (LangGraph's migrations add more).
_TABLES: dict[str, set[str]] = {
    "checkpoint_migrations": {"v"},
    "checkpoints": {"thread_id", "checkpoint_ns", "checkpoint_id", "checkpoint", "metadata"},
    "checkpoint_blobs": {"thread_id", "checkpoint_ns", "channel", "version", "type", "blob"},
    "checkpoint_writes": {"thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx", "channel", "type", "blob"},
}

# Each table of these names first on the search path, as an unqualified name finds it, and its columns: one
# statement reading the catalogs under one snapshot (``to_regclass`` reads them as of now, so beside a scan of
# pg_attribute it could see a table created by a concurrent set-up without its columns).
_TABLES_SQL = """
WITH found AS (
    SELECT DISTINCT ON (c.relname) c.relname AS name, c.oid
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    JOIN unnest(current_schemas(false)) WITH ORDINALITY AS s(nspname, position) ON s.nspname = n.nspname
    WHERE c.relname = ANY(%s::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    ORDER BY c.relname, s.position
)
SELECT found.name, a.attname
FROM found
LEFT JOIN pg_attribute AS a ON a.attrelid = found.oid AND a.attnum > 0 AND NOT a.attisdropped
"""

_PENDING_SQL = """
SELECT newest.thread_id, newest.checkpoint_ns, newest.checkpoint_id
FROM (
    SELECT DISTINCT ON (thread_id, checkpoint_ns) thread_id, checkpoint_ns, checkpoint_id
    FROM checkpoints
    ORDER BY thread_id, checkpoint_ns, checkpoint_id DESC
) AS newest
WHERE EXISTS (
    SELECT 1 FROM checkpoint_writes AS w
    WHERE w.thread_id = newest.thread_id AND w.checkpoint_ns = newest.checkpoint_ns
      AND w.checkpoint_id = newest.checkpoint_id AND w.channel = %s
)
ORDER BY newest.thread_id, newest.checkpoint_ns
"""


@contextmanager
def open_postgres_saver(url: str, *, must_exist: bool, read_only: bool) -> Iterator[PostgresSaver]:
    """A ``PostgresSaver`` on its own connection to ``url`` (see the module docstring); closed afterwards.

    ``InputError`` naming the database (password hidden) when the URL is malformed, the server cannot be reached
    or refuses the connection, the database is not a checkpoint database, or it fails while in use.
    """
    shown = redacted(url)
    conn = _connect(url, read_only=read_only)
    with conn:
        try:
            _check_tables(conn, shown, must_exist=must_exist or read_only)
            saver = PostgresSaver(conn)
            if not read_only and not _set_up(conn):
                with _advisory_lock(conn, _SETUP_LOCK, f"another process to set up {shown!r}", SETUP_TIMEOUT):
                    saver.setup()  # reads the migration version again: whatever the other process did is skipped
            yield saver
        except psycopg.Error as exc:
            raise InputError(f"PostgreSQL checkpoint database {shown!r} cannot be used: {scrubbed(exc, url)}") from exc


def _connect(url: str, *, read_only: bool) -> psycopg.Connection[DictRow]:
    shown = redacted(url)
    try:
        given = conninfo_to_dict(url)
        extra: dict[str, Any] = {"application_name": "guardrail"} if "application_name" not in given else {}
        if "connect_timeout" not in given:
            extra["connect_timeout"] = CONNECT_TIMEOUT
        if read_only:
            extra["options"] = f"{given.get('options') or ''} -c default_transaction_read_only=on".strip()
        conninfo = make_conninfo(url, **extra)
    except psycopg.Error as exc:  # libpq may quote the part it could not parse: never the password
        raise InputError(f"{shown!r} is not a valid PostgreSQL URL: {scrubbed(exc, url)}") from None
    try:
        return psycopg.Connection.connect(conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    except psycopg.Error as exc:
        raise InputError(
            f"cannot connect to the PostgreSQL checkpoint database {shown!r}: {scrubbed(exc, url)}"
        ) from None


def _check_tables(conn: psycopg.Connection[DictRow], shown: str, *, must_exist: bool) -> None:
    """Refuse, before anything is written, a database whose tables are not (or not yet, when they must be) the
    checkpointer's. Tables are looked up on the connection's ``search_path``, as ``PostgresSaver`` finds them."""
    present: dict[str, set[str]] = {}
    for row in conn.execute(_TABLES_SQL, [list(_TABLES)]).fetchall():
        present.setdefault(row["name"], set()).add(row["attname"])
    where = f"{shown!r} is not a checkpoint database"
    foreign = [name for name, columns in present.items() if not _TABLES[name] <= columns]
    if foreign:
        raise InputError(
            f"{where} (its table(s) {', '.join(map(repr, sorted(foreign)))} are not the checkpointer's: columns "
            "are missing); it was not changed"
        )
    missing = [name for name in _TABLES if name not in present]
    if missing and must_exist:
        raise InputError(
            f"{where} (a PostgreSQL database without the checkpointer's {', '.join(map(repr, missing))} "
            "table(s): no guarded graph has used it yet); it was not changed"
        )


def _set_up(conn: psycopg.Connection[DictRow]) -> bool:
    """True when the tables exist and every migration this ``PostgresSaver`` knows has run."""
    table = conn.execute("SELECT to_regclass('checkpoint_migrations') IS NOT NULL AS present").fetchone()
    if table is None or not table["present"]:
        return False
    row = conn.execute("SELECT max(v) AS v FROM checkpoint_migrations").fetchone()
    return row is not None and row["v"] is not None and row["v"] >= len(PostgresSaver.MIGRATIONS) - 1


@contextmanager
def _advisory_lock(
    conn: psycopg.Connection[DictRow], key: tuple[int, int], what: str, timeout: float
) -> Iterator[None]:
    """Hold the session-level advisory lock ``key`` on ``conn``; ``InputError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s) AS locked", key).fetchone()
        if row is not None and row["locked"]:
            break
        if time.monotonic() > deadline:
            raise InputError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(_POLL)
    try:
        yield
    finally:
        with suppress(psycopg.Error):  # a broken connection: the server ends the session and its locks with it
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)


@contextmanager
def thread_lock(saver: PostgresSaver, thread_id: str, *, timeout: float = THREAD_LOCK_TIMEOUT) -> Iterator[None]:
    """While held, no other process resolves ``thread_id`` through :func:`thread_lock` on the same database.

    The lock belongs to a database session: on the saver's own connection, or on one taken from its pool for the
    duration. Within one process, callers also serialise themselves (``resolve_escalation`` does): a session does
    not exclude itself.
    """
    key = (_THREAD_LOCK, zlib.crc32(thread_id.encode("utf-8")) - 2**31)  # an int4
    what = f"another process to finish resolving thread {thread_id!r}"
    if isinstance(saver.conn, ConnectionPool):
        with saver.conn.connection() as conn, _advisory_lock(conn, key, what, timeout):
            yield
    else:
        with _advisory_lock(saver.conn, key, what, timeout):
            yield


def pending_checkpoints(saver: PostgresSaver, channel: str) -> list[RunnableConfig]:
    """The config of the newest checkpoint of each thread (and namespace) that has a write on ``channel``
    (``__interrupt__``: a pending interrupt), ordered by thread id."""
    if isinstance(saver.conn, ConnectionPool):
        with saver.conn.connection() as conn:
            rows = conn.execute(_PENDING_SQL, [channel]).fetchall()
    else:
        with saver.lock:  # the saver's connection is shared with its own calls
            rows = saver.conn.execute(_PENDING_SQL, [channel]).fetchall()
    return [
        {
            "configurable": {
                "thread_id": row["thread_id"],
                "checkpoint_ns": row["checkpoint_ns"],
                "checkpoint_id": row["checkpoint_id"],
            }
        }
        for row in rows
    ]
