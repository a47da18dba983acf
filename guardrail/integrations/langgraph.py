"""The guarded call as LangGraph nodes: guard, route, and a separate cheap node for human review.

::

    START -> guardrail --accepted / abstained--> then (END by default)
                       \\--escalated--> guardrail_review --interrupt()--> (human) --Command(resume=...)--> then

``guardrail`` converts the state's LangChain messages to a :class:`~guardrail.Request`, runs the guard
(``Guard.run`` or ``Guard.arun``: the node has sync and async twins), and writes into state:

- ``guardrail``: the whole ``GuardResult`` as JSON (attempt requests left out: they repeat the images);
- ``confidence``: ``{"visual", "reasoning", "overall", "familiarity"}`` of the final attempt (``None`` where
  unknown; ``familiarity`` near 0 = an input unlike the calibration data);
- ``messages``: for accepted, an ``AIMessage`` with the answer; for abstained, an ``AIMessage`` that says why
  (never the answer that failed the policy); confidences are in ``response_metadata["guardrail"]``;
- ``escalation``: for escalated, the JSON payload shown to the reviewer (``_review.review_payload``): the
  question, candidate answer, confidences, the rule that escalated, the candidate's perception and reasoning, and
  a reference to each image. Inline images are written once to the graph's ``image_store`` (by default, for a
  ``SqliteSaver`` on a file, the folder ``<database>.images`` beside it), so the payload names them by path and
  SHA-256 instead of carrying their bytes.

``guardrail_review`` only calls ``interrupt(payload)``. The model call happened in the node before, and its
result is in the checkpoint, so resuming runs this small node again and never the model. The resume value is
validated by LangGraph against the decision schema (``approve`` / ``edit`` / ``answer`` / ``reject``, see
``guardrail.integrations._review``): an invalid one raises and is *not* saved, so the same escalation can be
answered again. ``resume_escalation`` checks it up front with a plain :class:`ReviewError`.

The guard may be given as a zero-argument factory: it is built on first use, so a process that only resumes
an escalation (the ``guardrail escalations resolve`` command) never loads the model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Annotated, Any, NotRequired, TypeAlias, cast

from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from ..guard import Guard
from ..messages import request_from_messages
from ..types import GuardResult, Request
from ._review import (
    ESCALATION_KIND,
    confidences_of,
    decision_schema,
    parse_review,
    resolved_message,
    result_json,
    result_message,
    review_payload,
)
from .image_store import ImageStore, store_for_checkpointer

__all__ = [
    "GuardSource",
    "GuardState",
    "add_guardrail_nodes",
    "aresume_escalation",
    "guardrail_graph",
    "pending_payload",
    "resume_escalation",
]

GuardSource: TypeAlias = Guard | Callable[[], Guard]
"""A guard, or a zero-argument factory that builds one on first use (e.g. loading a model)."""


class GuardState(TypedDict):
    """Graph state of a guarded conversation; a parent graph's state may add keys of its own."""

    messages: Annotated[list[AnyMessage], add_messages]
    guardrail: NotRequired[dict[str, Any] | None]
    confidence: NotRequired[dict[str, float | None] | None]
    escalation: NotRequired[dict[str, Any] | None]
    review: NotRequired[dict[str, Any] | None]


class _LazyGuard:
    """Builds the guard once, on first use, from a factory; thread-safe."""

    def __init__(self, source: GuardSource) -> None:
        self._guard = source if isinstance(source, Guard) else None
        self._factory = None if isinstance(source, Guard) else source
        self._lock = threading.Lock()

    def get(self) -> Guard:
        if self._guard is None:
            with self._lock:
                if self._guard is None:
                    assert self._factory is not None
                    built = self._factory()
                    if not isinstance(built, Guard):
                        raise TypeError(f"guard factory returned {type(built).__name__}, expected guardrail.Guard")
                    self._guard = built
        return self._guard


def add_guardrail_nodes(
    builder: StateGraph[Any, Any, Any, Any],
    guard: GuardSource,
    *,
    name: str = "guardrail",
    then: str = END,
    image_store: ImageStore | str | Path | None = None,
) -> str:
    """Add the guard node and its review node to ``builder``; return the entry node's name.

    The caller adds the edge into ``name``; both the answer and the reviewed answer continue to ``then``.
    The state schema must have the keys of :class:`GuardState`. ``image_store`` (a store or its folder) keeps the
    inline images of escalations; without one an escalation names only small images inline (see
    :mod:`guardrail.integrations.image_store`).
    """
    lazy = _LazyGuard(guard)
    review = f"{name}_review"
    store = ImageStore(image_store) if isinstance(image_store, str | Path) else image_store

    def run(state: Any) -> dict[str, Any]:
        request = request_from_messages(state["messages"])
        return _update(lazy.get().run(request), request, store)

    async def arun(state: Any) -> dict[str, Any]:
        request = request_from_messages(state["messages"])
        return _update(await lazy.get().arun(request), request, store)

    def route(state: Mapping[str, Any]) -> str:
        result = state.get("guardrail") or {}
        return review if result.get("status") == "escalated" else then

    async def areview(state: Any) -> dict[str, Any]:
        return _review(state)

    builder.add_node(name, RunnableLambda(run, afunc=arun, name=name))
    builder.add_node(review, RunnableLambda(_review, afunc=areview, name=review))
    path_map: dict[Hashable, str] = {review: review, then: then}
    builder.add_conditional_edges(name, route, path_map)
    builder.add_edge(review, then)
    return name


def guardrail_graph(
    guard: GuardSource,
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    name: str = "guardrail",
    image_store: ImageStore | str | Path | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A compiled graph ``START -> guardrail [-> guardrail_review] -> END`` over :class:`GuardState`.

    Use it on its own or as a subgraph node of a larger graph that shares the ``messages`` key. Escalation needs
    a checkpointer (here, or the parent graph's). Escalated images go to ``image_store``; by default, with a
    ``SqliteSaver`` on a database file, to ``<database>.images`` beside it. Any other checkpointer (PostgreSQL)
    has no default: without ``image_store`` only images up to 32 KiB reach the reviewer, inline.
    """
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(GuardState)
    store = image_store if image_store is not None else store_for_checkpointer(checkpointer)
    entry = add_guardrail_nodes(builder, guard, name=name, image_store=store)
    builder.add_edge(START, entry)
    return builder.compile(checkpointer=checkpointer, name=name)


def resume_escalation(
    graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str, decision: object
) -> dict[str, Any]:
    """Resume a thread waiting on a guardrail review with the human ``decision``; return the final state.

    The decision is checked against the pending escalation first, so a bad one raises :class:`ReviewError`
    and leaves the thread waiting. Raises ``LookupError`` when the thread has no pending escalation.
    """
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    payload = pending_payload(graph, config)
    parsed = parse_review(decision, candidate_answer=payload.get("candidate_answer"))
    result = graph.invoke(Command(resume=parsed.model_dump(mode="json", exclude_none=True)), config)
    return cast(dict[str, Any], result)


async def aresume_escalation(
    graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str, decision: object
) -> dict[str, Any]:
    """The async twin of :func:`resume_escalation`."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    snapshot = await graph.aget_state(config)
    payload = _payload_of(snapshot.interrupts, thread_id)
    parsed = parse_review(decision, candidate_answer=payload.get("candidate_answer"))
    result = await graph.ainvoke(Command(resume=parsed.model_dump(mode="json", exclude_none=True)), config)
    return cast(dict[str, Any], result)


def pending_payload(graph: CompiledStateGraph[Any, Any, Any, Any], config: RunnableConfig) -> dict[str, Any]:
    """The escalation payload a thread is waiting on; ``LookupError`` when there is none."""
    thread_id = str(config.get("configurable", {}).get("thread_id"))
    return _payload_of(graph.get_state(config, subgraphs=True).interrupts, thread_id)


# ---------------------------------------------------------------------------------------------------------------


def _update(result: GuardResult, request: Request, store: ImageStore | None) -> dict[str, Any]:
    update: dict[str, Any] = {
        "guardrail": result_json(result),
        "confidence": confidences_of(result.confidence),
        "escalation": None,
        "review": None,
    }
    if result.status == "escalated":
        update["escalation"] = review_payload(result, request=request, image_store=store)
    else:
        update["messages"] = [result_message(result)]
    return update


def _review(state: Any) -> dict[str, Any]:
    """Put the stored escalation to a human and turn the decision into the final message (cheap, no model)."""
    payload = dict(state.get("escalation") or {})
    if not payload:
        raise LookupError("guardrail review node reached without an escalation in state")
    thread_id = get_config().get("configurable", {}).get("thread_id")
    payload["thread_id"] = None if thread_id is None else str(thread_id)
    candidate = payload.get("candidate_answer")
    answer = interrupt(payload, response_schema=decision_schema(candidate))
    decision = parse_review(answer, candidate_answer=candidate)
    return {"messages": [resolved_message(payload, decision)], "review": decision.model_dump(mode="json")}


def _payload_of(interrupts: Any, thread_id: str) -> dict[str, Any]:
    for pending in interrupts:
        value = pending.value
        if isinstance(value, Mapping) and value.get("kind") == ESCALATION_KIND:
            return dict(value)
    raise LookupError(f"thread {thread_id!r} has no pending guardrail escalation")
