"""Graph factories for the escalation tests, importable by dotted path from another process.

``build_graph(checkpointer)`` is what ``guardrail escalations resolve --graph tests.support.graphs:build_graph``
rebuilds. With ``GUARDRAIL_TEST_NO_MODEL=1`` building the guard fails: the resuming process proves it never
needs the model.
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


def build_graph(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    return guardrail_graph(_guard, checkpointer=checkpointer)


def start(db: str, thread_id: str) -> None:
    """Process one: run until the human review, then die abruptly (no cleanup) while the human thinks."""
    from guardrail.integrations.escalations import open_saver
    from tests.support.integration import image_message

    with open_saver(db, must_exist=False) as saver:
        state = build_graph(saver).invoke({"messages": [image_message()]}, {"configurable": {"thread_id": thread_id}})
        print("waiting:", state["__interrupt__"][0].value["candidate_answer"], flush=True)
        os._exit(0)  # no close, no atexit: the process is gone while the escalation is pending


if __name__ == "__main__":
    start(sys.argv[1], sys.argv[2])
