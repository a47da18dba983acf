"""Pending human escalations in a SQLite checkpoint database: list them, and resolve one.

Listing reads the checkpointer's own records (``SqliteSaver.list``): the newest checkpoint of each thread and the
interrupts pending on it whose payload is a guardrail escalation. It needs no graph and loads no model, so it is
cheap and safe to run beside a live agent.

Resolving needs the graph that raised the escalation, to continue it after the review. The graph is rebuilt
from a *graph factory*: a callable ``factory(checkpointer) -> compiled graph`` named by a dotted path
``"package.module:function"`` or a file path ``"path/to/file.py:function"``. The default,
``guardrail.integrations.escalations:reference_graph``, is the standard guardrail graph
(:func:`guardrail.integrations.langgraph.guardrail_graph`) over the embedded reference model; its guard is
built lazily, so resuming (which never re-runs the model call) does not load the model at all.
"""

from __future__ import annotations

import importlib
import importlib.util
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph.state import CompiledStateGraph

from ..errors import ConfigurationError, InputError
from ._review import ESCALATION_KIND
from .langgraph import resume_escalation

__all__ = [
    "DEFAULT_GRAPH",
    "GraphFactory",
    "PendingEscalation",
    "list_escalations",
    "load_graph_factory",
    "open_saver",
    "reference_graph",
    "resolve_escalation",
]

GraphFactory = Callable[[SqliteSaver], CompiledStateGraph[Any, Any, Any, Any]]
"""Rebuilds a graph over a given checkpointer: ``factory(checkpointer) -> compiled graph``."""

DEFAULT_GRAPH = "guardrail.integrations.escalations:reference_graph"
"""The graph factory used when none is named: the standard guardrail graph over the reference model."""

_INTERRUPT = "__interrupt__"


@dataclass(frozen=True)
class PendingEscalation:
    """One escalation waiting for a human: where it is and what the reviewer is shown."""

    thread_id: str
    interrupt_id: str
    question: str
    candidate_answer: str | None
    confidence: Mapping[str, float | None]
    reason: str
    payload: Mapping[str, Any]


@contextmanager
def open_saver(db: str | Path, *, must_exist: bool = True) -> Iterator[SqliteSaver]:
    """A ``SqliteSaver`` on the database file ``db`` (refused when the file is missing and ``must_exist``)."""
    path = Path(db)
    if must_exist and not path.is_file():
        raise InputError(f"checkpoint database {str(path)!r} does not exist")
    with closing(sqlite3.connect(str(path), check_same_thread=False)) as conn:
        saver = SqliteSaver(conn)
        saver.setup()
        yield saver


def list_escalations(saver: SqliteSaver) -> list[PendingEscalation]:
    """Every guardrail escalation pending on the newest checkpoint of each thread, oldest thread first."""
    newest: dict[tuple[str, str], Any] = {}
    for item in saver.list(None):
        configurable = item.config["configurable"]
        key = (str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", "")))
        newest.setdefault(key, item)  # list() yields newest first
    found: dict[str, PendingEscalation] = {}
    for (thread_id, _ns), item in newest.items():
        for _task, channel, value in item.pending_writes or ():
            for pending in value if channel == _INTERRUPT and isinstance(value, list | tuple) else ():
                payload = getattr(pending, "value", None)
                if isinstance(payload, Mapping) and payload.get("kind") == ESCALATION_KIND:
                    found.setdefault(pending.id, _pending(thread_id, pending.id, payload))
    return sorted(found.values(), key=lambda e: e.thread_id)


def resolve_escalation(
    saver: SqliteSaver,
    thread_id: str,
    decision: object,
    *,
    graph: str | GraphFactory = DEFAULT_GRAPH,
) -> dict[str, Any]:
    """Resume ``thread_id`` with the human ``decision`` on a graph rebuilt by ``graph``; return the final state."""
    factory = load_graph_factory(graph) if isinstance(graph, str) else graph
    return resume_escalation(factory(saver), thread_id, decision)


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


def reference_graph(checkpointer: SqliteSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The standard guardrail graph over the embedded reference model (built only if the model is called)."""
    from .langgraph import guardrail_graph

    return guardrail_graph(_reference_guard, checkpointer=checkpointer)


def _reference_guard() -> Any:
    from ..pretrained import load_guard

    return load_guard()


def _pending(thread_id: str, interrupt_id: str, payload: Mapping[str, Any]) -> PendingEscalation:
    confidence = payload.get("confidence")
    return PendingEscalation(
        thread_id=thread_id,
        interrupt_id=str(interrupt_id),
        question=str(payload.get("question", "")),
        candidate_answer=payload.get("candidate_answer"),
        confidence=dict(confidence) if isinstance(confidence, Mapping) else {},
        reason=str(payload.get("reason", "")),
        payload=dict(payload),
    )


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
