"""Pending human escalations in a checkpoint database (a SQLite file or PostgreSQL): list them, and resolve one.

A database is named as ``--db`` names it (:func:`open_saver`): a SQLite file (``langgraph-checkpoint-sqlite``), or
a ``postgresql://`` URL (``langgraph-checkpoint-postgres``, the ``postgres`` extra), where many worker processes,
on many machines, keep their threads and one reviewer lists and resolves them all.

Listing reads the checkpointer's own records: the newest checkpoint of each thread and the interrupts pending on
it whose payload is a guardrail escalation (on PostgreSQL one query finds the threads with an interrupt pending;
elsewhere ``saver.list`` reads every checkpoint). It needs no graph and loads no model, so it is cheap and safe to
run beside live agents.

Resolving needs the graph that raised the escalation, to continue it after the review. The graph is rebuilt
from a *graph factory*: a callable ``factory(checkpointer) -> compiled graph`` named by a dotted path
``"package.module:function"`` or a file path ``"path/to/file.py:function"``. The default,
``guardrail.integrations.escalations:reference_graph``, is the standard guardrail graph
(:func:`guardrail.integrations.langgraph.guardrail_graph`) over the embedded reference model; its guard is
built lazily, so resuming (which never re-runs the model call) does not load the model at all. One thread is
resolved by one caller at a time: within a process, and on PostgreSQL across processes (an advisory lock), so a
second reviewer of the same escalation finds it no longer pending.
"""

from __future__ import annotations

import importlib
import importlib.util
import sqlite3
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph.state import CompiledStateGraph

from ..errors import ConfigurationError, InputError
from ._database import is_postgres_url, redacted, unsupported_url_scheme
from ._review import ESCALATION_KIND
from .langgraph import resume_escalation

__all__ = [
    "DEFAULT_GRAPH",
    "POSTGRES_INSTALL_HINT",
    "REVIEW_INSTALL_HINT",
    "GraphFactory",
    "PendingEscalation",
    "list_escalations",
    "load_graph_factory",
    "open_saver",
    "redacted",
    "reference_graph",
    "resolve_escalation",
]

GraphFactory = Callable[[BaseCheckpointSaver[Any]], CompiledStateGraph[Any, Any, Any, Any]]
"""Rebuilds a graph over a given checkpointer: ``factory(checkpointer) -> compiled graph``."""

REVIEW_INSTALL_HINT = "the review page needs the `review` extra: pip install 'lvlm-guardrail[review]'"
"""What ``guardrail escalations serve`` says when the web framework it runs on is not installed."""

POSTGRES_INSTALL_HINT = (
    "a postgresql:// checkpoint database needs the `postgres` extra: pip install 'lvlm-guardrail[postgres]'"
)
"""What :func:`open_saver` says for a PostgreSQL URL when ``langgraph-checkpoint-postgres`` or ``psycopg`` is
missing (it never falls back to SQLite)."""

DEFAULT_GRAPH = "guardrail.integrations.escalations:reference_graph"
"""The graph factory used when none is named: the standard guardrail graph over the reference model."""

_INTERRUPT = "__interrupt__"
_RESOLVING = tuple(threading.Lock() for _ in range(64))  # one resolver per thread id in this process (striped)


@dataclass(frozen=True)
class PendingEscalation:
    """One escalation waiting for a human: where it is and what the reviewer is shown.

    The fields after ``payload`` come from keys that payloads saved by earlier versions lack: they are then
    empty (``None``, ``()``), and such an escalation still lists and resolves.
    """

    thread_id: str
    interrupt_id: str
    question: str
    candidate_answer: str | None
    confidence: Mapping[str, float | None]
    reason: str
    payload: Mapping[str, Any]
    rule: str | None = None
    components: tuple[str, ...] = ()
    perception: str | None = None
    reasoning: str | None = None
    response: str | None = None
    images: tuple[Mapping[str, Any], ...] = ()
    decision_confidence: Mapping[str, float | None] | None = None
    """The confidences the escalating rule acted on (the latest attempt's; ``confidence`` is the candidate's)."""


@contextmanager
def open_saver(
    db: str | Path, *, must_exist: bool = True, read_only: bool = False
) -> Iterator[BaseCheckpointSaver[Any]]:
    """The checkpointer of the database ``db``: a SQLite file, or a PostgreSQL database by a ``postgresql://`` URL.

    The one way a ``--db`` value is opened, by every ``guardrail escalations`` command and the review page.
    Whatever goes wrong is a ``GuardrailError`` naming the database (with a URL's password shown as ``***``), never
    a silent fallback to another store:

    - a SQLite file (``SqliteSaver``): an existing file must already be a checkpoint database (``InputError``
      otherwise): a foreign file, such as an image or another application's SQLite database, is never written to.
      ``read_only`` opens the file read-only (listing needs no writes). A missing file is refused when
      ``must_exist``, else created; so is an empty one. SQLite errors while the saver is in use become
      ``InputError`` naming the file.
    - a PostgreSQL URL (``PostgresSaver``, the ``postgres`` extra; ``ConfigurationError`` when it is not
      installed): the database itself must exist (guardrail creates no databases). Its checkpoint tables must
      exist already when ``must_exist`` or ``read_only``, else they are created (one process at a time); tables of
      the same names that are not the checkpointer's are refused, and nothing is written. ``read_only`` makes
      every transaction of the session read-only. A server that cannot be reached, refuses the login or fails
      while in use is an ``InputError``. The password may also come from ``PGPASSWORD`` or ``~/.pgpass``, as
      libpq reads them.
    - any other URL scheme is an ``InputError``.
    """
    if is_postgres_url(db):
        assert isinstance(db, str)
        try:
            from ._postgres import open_postgres_saver
        except ImportError as exc:
            raise ConfigurationError(f"{POSTGRES_INSTALL_HINT} ({exc})") from exc
        with open_postgres_saver(db, must_exist=must_exist, read_only=read_only) as saver:
            yield saver
        return
    scheme = unsupported_url_scheme(db)
    if scheme is not None:
        raise InputError(
            f"checkpoint database {redacted(db)!r}: {scheme}:// is not supported; give a SQLite file or a "
            "postgresql:// URL"
        )
    with _open_sqlite_saver(Path(db), must_exist=must_exist, read_only=read_only) as sqlite_saver:
        yield sqlite_saver


@contextmanager
def _open_sqlite_saver(path: Path, *, must_exist: bool, read_only: bool) -> Iterator[SqliteSaver]:
    if path.exists() and not path.is_file():
        raise InputError(f"checkpoint database {str(path)!r} is not a file")
    if must_exist and not path.is_file():
        raise InputError(f"checkpoint database {str(path)!r} does not exist")
    fresh = not path.is_file() or (path.stat().st_size == 0 and not must_exist and not read_only)
    if not fresh:
        _check_checkpoint_database(path)
    try:
        if read_only:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        else:
            conn = sqlite3.connect(str(path), check_same_thread=False)
        with closing(conn):
            saver = SqliteSaver(conn)
            if read_only:
                saver.is_setup = True  # its setup() would create tables and switch the journal mode
            else:
                saver.setup()
            yield saver
    except sqlite3.DatabaseError as exc:
        raise InputError(f"checkpoint database {str(path)!r} cannot be used: {exc}") from exc


_CHECKPOINT_TABLES = {
    "checkpoints": {"thread_id", "checkpoint_ns", "checkpoint_id", "checkpoint", "metadata"},
    "writes": {"thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx", "channel", "value"},
}


def _check_checkpoint_database(path: Path) -> None:
    """Refuse, without writing to it, a file that is not a LangGraph SQLite checkpoint database."""
    where = f"{str(path)!r} is not a checkpoint database"
    if path.stat().st_size == 0:
        raise InputError(f"{where} (the file is empty)")
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            columns = {
                table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")} for table in _CHECKPOINT_TABLES
            }
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{where} ({exc})") from exc
    missing = [t for t, needed in _CHECKPOINT_TABLES.items() if not needed <= columns[t]]
    if missing:
        raise InputError(
            f"{where} (a SQLite database without the checkpointer's {' and '.join(map(repr, missing))} "
            "table(s)); it was not changed"
        )


def list_escalations(saver: BaseCheckpointSaver[Any]) -> list[PendingEscalation]:
    """Every guardrail escalation pending on the newest checkpoint of each thread, oldest thread first."""
    found: dict[str, PendingEscalation] = {}
    for thread_id, item in _newest_checkpoints(saver):
        for _task, channel, value in item.pending_writes or ():
            for pending in value if channel == _INTERRUPT and isinstance(value, list | tuple) else ():
                payload = getattr(pending, "value", None)
                if isinstance(payload, Mapping) and payload.get("kind") == ESCALATION_KIND:
                    found.setdefault(pending.id, _pending(thread_id, pending.id, payload))
    return sorted(found.values(), key=lambda e: e.thread_id)


def _newest_checkpoints(saver: BaseCheckpointSaver[Any]) -> Iterator[tuple[str, CheckpointTuple]]:
    """The newest checkpoint of each thread and namespace that may have an interrupt pending."""
    postgres = _postgres_module(saver)
    if postgres is not None:
        for config in postgres.pending_checkpoints(saver, _INTERRUPT):
            item = saver.get_tuple(config)
            if item is not None:
                yield str(config["configurable"]["thread_id"]), item
        return
    newest: dict[tuple[str, str], CheckpointTuple] = {}
    for item in saver.list(None):
        configurable = item.config["configurable"]
        key = (str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", "")))
        newest.setdefault(key, item)  # list() yields newest first
    for (thread_id, _ns), item in newest.items():
        yield thread_id, item


def resolve_escalation(
    saver: BaseCheckpointSaver[Any],
    thread_id: str,
    decision: object,
    *,
    graph: str | GraphFactory = DEFAULT_GRAPH,
) -> dict[str, Any]:
    """Resume ``thread_id`` with the human ``decision`` on a graph rebuilt by ``graph``; return the final state.

    One caller at a time resolves a thread: in this process, and on PostgreSQL in every process using the same
    database. The next caller then finds the escalation resolved (``LookupError``), never resumes it twice.
    """
    factory = load_graph_factory(graph) if isinstance(graph, str) else graph
    postgres = _postgres_module(saver)
    across_processes = postgres.thread_lock(saver, thread_id) if postgres is not None else nullcontext()
    with _RESOLVING[zlib.crc32(thread_id.encode("utf-8")) % len(_RESOLVING)], across_processes:
        return resume_escalation(factory(saver), thread_id, decision)


def _postgres_module(saver: BaseCheckpointSaver[Any]) -> Any:
    """``guardrail.integrations._postgres`` when ``saver`` is a ``PostgresSaver``, else ``None`` (without
    importing the PostgreSQL driver when it is not already loaded: then the saver cannot be one)."""
    module = sys.modules.get("langgraph.checkpoint.postgres")
    if module is None or not isinstance(saver, module.PostgresSaver):
        return None
    from . import _postgres

    return _postgres


def load_graph_factory(spec: str) -> GraphFactory:
    """The callable named by ``"module.path:attr"`` or ``"file.py:attr"``, with errors that say what is wrong."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigurationError(f"graph factory must be 'module:function' or 'file.py:function', got {spec!r}")
    try:
        module = _load_file(target) if target.endswith(".py") else importlib.import_module(target)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import graph factory module {target!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigurationError(f"{target!r} has no callable {attr!r} (graph factory {spec!r})")
    result: GraphFactory = factory
    return result


def reference_graph(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The standard guardrail graph over the embedded reference model (built only if the model is called)."""
    from .langgraph import guardrail_graph

    return guardrail_graph(_reference_guard, checkpointer=checkpointer)


def _reference_guard() -> Any:
    from ..pretrained import load_guard

    return load_guard()


def _pending(thread_id: str, interrupt_id: str, payload: Mapping[str, Any]) -> PendingEscalation:
    confidence = payload.get("confidence")
    components = payload.get("components")
    decided = payload.get("decision_confidence")
    images = payload.get("images")
    return PendingEscalation(
        thread_id=thread_id,
        interrupt_id=str(interrupt_id),
        question=str(payload.get("question", "")),
        candidate_answer=payload.get("candidate_answer"),
        confidence=dict(confidence) if isinstance(confidence, Mapping) else {},
        reason=str(payload.get("reason", "")),
        payload=dict(payload),
        rule=_text_or_none(payload.get("rule")),
        components=tuple(str(c) for c in components) if isinstance(components, list | tuple) else (),
        perception=_text_or_none(payload.get("perception")),
        reasoning=_text_or_none(payload.get("reasoning")),
        response=_text_or_none(payload.get("response")),
        images=tuple(dict(i) for i in images if isinstance(i, Mapping)) if isinstance(images, list | tuple) else (),
        decision_confidence=dict(decided) if isinstance(decided, Mapping) else None,
    )


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _load_file(path: str) -> Any:
    file = Path(path).resolve()
    if not file.is_file():
        raise ImportError(f"no such file {path!r}")
    name = f"_guardrail_graph_{abs(hash(str(file)))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
