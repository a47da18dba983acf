"""``guardrail demo``: a LangGraph agent answers easy-VQA questions on corrupted images through the guard.

Each question runs through a real compiled graph (guard node, then a review node that interrupts for a human on
escalation) with a real SQLite checkpointer (``checkpoints.sqlite`` in the output folder, the escalated images
beside it). Escalations are answered by a stand-in reviewer of stated accuracy (or, with ``interactive``, by the
person at the keyboard), or left pending (``reviewer=None``) for ``guardrail escalations serve``. The summary
compares the model alone (every first answer, 100 % coverage) with the guarded agent, counts the actions the policy
took, and measures the latency the guard added. The output folder receives the calibration report, a JSONL trace
file and ``summary.json``.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .data.labelled import LabelledItem
from .responses import answers_match

__all__ = ["DemoSummary", "QuestionOutcome", "Reviewer", "StandInReviewer", "run_demo"]

Reviewer = Callable[[dict[str, Any], LabelledItem], dict[str, Any]]
"""Given the escalation payload and the item, returns the resume decision ({"type": "approve" | "answer" ...})."""


@dataclass
class StandInReviewer:
    """A simulated human: right with probability ``accuracy`` (seeded), otherwise gives a wrong answer."""

    accuracy: float = 0.9
    seed: int = 0
    wrong_answers: tuple[str, ...] = ("yes", "no", "red", "blue", "circle", "triangle", "1", "2", "3")
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"`accuracy` must be in [0, 1], got {self.accuracy}")
        self._rng = random.Random(self.seed)

    def __call__(self, payload: dict[str, Any], item: LabelledItem) -> dict[str, Any]:
        candidate = payload.get("candidate_answer")
        if self._rng.random() < self.accuracy:
            if answers_match(candidate, item.answer):
                return {"type": "approve"}
            return {"type": "answer", "answer": item.answer}
        wrong = [a for a in self.wrong_answers if not answers_match(a, item.answer)]
        return {"type": "answer", "answer": self._rng.choice(wrong)}


@dataclass(frozen=True)
class QuestionOutcome:
    """What happened to one question."""

    question: str
    truth: str
    corruption: str
    severity: int
    status: str
    unguarded_answer: str | None
    final_answer: str | None
    answered_by: str  # "model", "reviewer", "nobody", or "pending" (an escalation left for a human)
    actions: tuple[str, ...]
    guard_seconds: float
    first_model_seconds: float

    @property
    def unguarded_correct(self) -> bool:
        return answers_match(self.unguarded_answer, self.truth)

    @property
    def final_correct(self) -> bool:
        return answers_match(self.final_answer, self.truth)


@dataclass(frozen=True)
class DemoSummary:
    """The demo's figures, also written to ``summary.json``."""

    n: int
    unguarded_accuracy: float
    model_coverage: float
    model_accuracy: float | None
    agent_coverage: float
    agent_accuracy: float | None
    reviewer_accuracy: float | None
    actions: dict[str, int]
    escalations: int
    abstentions: int
    pending_reviews: int
    """Escalations left waiting for a human (with ``reviewer=None``), in ``review_db``."""
    review_db: str
    mean_added_seconds: float
    """Per question, the guard's time beyond the model's first answer. One conversation at a time this is the
    latency the guard adds; in batches it also holds the wait for the batch's other conversations."""
    seconds: float
    batch_size: int
    out_dir: str
    outcomes: list[QuestionOutcome]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcomes"] = [asdict(o) for o in self.outcomes]
        return data


def run_demo(
    items: list[LabelledItem],
    *,
    guard: Any,
    reviewer: Reviewer | None,
    out_dir: Path,
    on_outcome: Callable[[QuestionOutcome], None] | None = None,
    batch_size: int = 1,
) -> DemoSummary:
    """Run every item through a guarded LangGraph agent; see the module docstring. With ``reviewer=None``
    escalations stay pending in ``out_dir/checkpoints.sqlite``, each on its thread ``demo-N``.

    ``batch_size`` > 1 runs that many conversations at once (``graph.batch``); with a guard built by
    ``load_guard(..., batch_size=...)`` their model calls are answered together. Reviews follow in question order.
    """
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.types import Command

    from .integrations.image_store import ImageStore
    from .integrations.langgraph import guardrail_graph
    from .messages import messages_from_request

    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / "checkpoints.sqlite"
    db.unlink(missing_ok=True)
    shutil.rmtree(ImageStore.beside(db).root, ignore_errors=True)  # the images of an earlier run's escalations
    start = time.perf_counter()
    outcomes: list[QuestionOutcome] = []
    with sqlite3.connect(db, check_same_thread=False) as connection:
        graph = guardrail_graph(guard, checkpointer=SqliteSaver(connection))
        configs: list[Any] = [{"configurable": {"thread_id": f"demo-{index}"}} for index in range(len(items))]
        states: dict[int, Any] = {}
        for index, item in enumerate(items):
            if index not in states:  # the next chunk of conversations, run together
                chunk = range(index, min(index + max(batch_size, 1), len(items)))
                inputs = [{"messages": messages_from_request(items[i].request)} for i in chunk]
                assert all(isinstance(i["messages"][-1], HumanMessage) for i in inputs)
                ran = graph.batch(inputs, [configs[i] for i in chunk], max_concurrency=len(chunk))
                states.update(zip(chunk, ran, strict=True))
            config = configs[index]
            state = states.pop(index)
            result = state["guardrail"]
            answered_by = "model" if result["status"] == "accepted" else "nobody"
            final_answer = result.get("answer")
            if result["status"] == "escalated" and reviewer is None:
                answered_by = "pending"  # the thread waits in the database for a human
            elif result["status"] == "escalated" and reviewer is not None:
                decision = reviewer(dict(state["escalation"]), item)
                state = graph.invoke(Command(resume=decision), config)
                review = state.get("review") or {}
                if review.get("type") == "approve":
                    final_answer, answered_by = result["escalation"]["candidate_answer"], "reviewer"
                elif review.get("type") in ("answer", "edit"):
                    final_answer, answered_by = review["answer"], "reviewer"
            attempts = result["attempts"]
            first = attempts[0]["generation"] if attempts else None
            outcome = QuestionOutcome(
                question=item.request.question,
                truth=item.answer,
                corruption=item.tags.get("corruption", "none"),
                severity=int(item.tags.get("severity", "0")),
                status=result["status"],
                unguarded_answer=None if first is None else first.get("answer"),
                final_answer=final_answer,
                answered_by=answered_by,
                actions=tuple(d["action"] for d in result["decisions"]),
                guard_seconds=float(result["seconds"]),
                first_model_seconds=0.0 if first is None else float(first["seconds"]),
            )
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return _summarise(outcomes, time.perf_counter() - start, out_dir, db, max(batch_size, 1))


def _summarise(
    outcomes: list[QuestionOutcome], seconds: float, out_dir: Path, db: Path, batch_size: int
) -> DemoSummary:
    n = len(outcomes)
    by_model = [o for o in outcomes if o.answered_by == "model"]
    by_reviewer = [o for o in outcomes if o.answered_by == "reviewer"]
    answered = by_model + by_reviewer
    actions = Counter(a for o in outcomes for a in o.actions)

    def accuracy(group: list[QuestionOutcome]) -> float | None:
        return None if not group else sum(o.final_correct for o in group) / len(group)

    summary = DemoSummary(
        n=n,
        unguarded_accuracy=sum(o.unguarded_correct for o in outcomes) / max(n, 1),
        model_coverage=len(by_model) / max(n, 1),
        model_accuracy=accuracy(by_model),
        agent_coverage=len(answered) / max(n, 1),
        agent_accuracy=accuracy(answered),
        reviewer_accuracy=accuracy(by_reviewer),
        actions=dict(sorted(actions.items())),
        escalations=sum(o.status == "escalated" for o in outcomes),
        abstentions=sum(o.status == "abstained" for o in outcomes),
        pending_reviews=sum(o.answered_by == "pending" for o in outcomes),
        review_db=str(db),
        mean_added_seconds=sum(o.guard_seconds - o.first_model_seconds for o in outcomes) / max(n, 1),
        seconds=seconds,
        batch_size=batch_size,
        out_dir=str(out_dir),
        outcomes=outcomes,
    )
    (out_dir / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return summary
