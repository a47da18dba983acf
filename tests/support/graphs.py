"""Graph factories for the escalation tests, importable by dotted path from another process.

``build_graph(checkpointer)`` is what ``guardrail escalations resolve --graph tests.support.graphs:build_graph``
rebuilds; ``python -m tests.support.graphs DB THREAD...`` is a worker process that escalates those threads (on a
SQLite file or a PostgreSQL URL) and exits. With ``GUARDRAIL_TEST_NO_MODEL=1`` building the guard fails: the
resuming process proves it never needs the model.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from guardrail import Guard
from guardrail.integrations import guardrail_graph
from tests.support.integration import ESCALATE, scripted_guard


def _guard() -> Guard:
    if os.environ.get("GUARDRAIL_TEST_NO_MODEL") == "1":
        raise RuntimeError("the resuming process must not build the model")
    guard, _ = scripted_guard(ESCALATE)
    return guard


def build_graph(checkpointer: BaseCheckpointSaver[Any], image_store: str | None = None) -> Any:
    return guardrail_graph(_guard, checkpointer=checkpointer, image_store=image_store)


def start(db: str, *thread_ids: str, images: str | None = None) -> None:
    """A worker: run each thread until the human review, then die abruptly (no cleanup) while the human thinks.

    ``db`` is a SQLite file or a ``postgresql://`` URL; ``images`` an image store folder for escalated images."""
    from guardrail.integrations.escalations import open_saver
    from tests.support.integration import image_message

    with open_saver(db, must_exist=False) as saver:
        graph = build_graph(saver, images)
        for thread_id in thread_ids:
            state = graph.invoke({"messages": [image_message()]}, {"configurable": {"thread_id": thread_id}})
            print("waiting:", state["__interrupt__"][0].value["candidate_answer"], flush=True)
        os._exit(0)  # no close, no atexit: the process is gone while the escalations are pending


if __name__ == "__main__":
    # python -m tests.support.graphs DB THREAD [THREAD ...] [--images DIR]
    arguments = sys.argv[1:]
    store = None
    if "--images" in arguments:
        at = arguments.index("--images")
        store = arguments[at + 1]
        del arguments[at : at + 2]
    start(arguments[0], *arguments[1:], images=store)
