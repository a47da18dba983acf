"""The demo's conversations run in batches decide exactly as one at a time (the reference model, greedy)."""

from __future__ import annotations

from pathlib import Path

from guardrail import load_guard
from guardrail.backends import CoalescingBackend
from guardrail.data.labelled import easyvqa_items
from guardrail.demo import StandInReviewer, run_demo
from tests.support.model_outputs import assert_same_model_output


def test_batched_conversations_match_one_at_a_time(tmp_path: Path) -> None:
    items = easyvqa_items("test", limit=12, seed=3)
    alone = run_demo(
        items, guard=load_guard(), reviewer=StandInReviewer(seed=1), out_dir=tmp_path / "one", batch_size=1
    )
    guard = load_guard(batch_size=6)
    assert isinstance(guard.backend, CoalescingBackend)
    together = run_demo(items, guard=guard, reviewer=StandInReviewer(seed=1), out_dir=tmp_path / "six", batch_size=6)
    # every outcome but its timings: statuses, answers, actions (no model floats, so all compared exactly)
    assert_same_model_output(together.outcomes, alone.outcomes, name="outcomes")
    assert (together.batch_size, alone.batch_size) == (6, 1)
    assert max(guard.backend.batches) > 1  # the conversations' model calls did meet
