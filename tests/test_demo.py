"""``run_demo`` and ``guardrail demo --review-later``: escalations answered by a stand-in or left for review."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrail import Request
from guardrail.cli import _register, app
from guardrail.data.labelled import LabelledItem
from guardrail.demo import StandInReviewer, run_demo
from guardrail.integrations import ImageStore, list_escalations, open_saver, resolve_escalation
from tests.support.integration import ESCALATE, png_bytes, scripted_guard


def items(n: int) -> list[LabelledItem]:
    request = Request.from_question("What colour is the shape?", [png_bytes()])
    return [LabelledItem(request=request, answer="red", tags={"corruption": "none", "severity": "0"})] * n


def test_without_a_reviewer_escalations_stay_pending_with_their_images(tmp_path: Path) -> None:
    guard, _ = scripted_guard(ESCALATE)
    summary = run_demo(items(3), guard=guard, reviewer=None, out_dir=tmp_path)
    assert (summary.escalations, summary.pending_reviews) == (3, 3)
    assert summary.review_db == str(tmp_path / "checkpoints.sqlite")
    assert {o.answered_by for o in summary.outcomes} == {"pending"}
    assert summary.agent_coverage == 0.0
    with open_saver(summary.review_db) as saver:
        pending = list_escalations(saver)
        assert [p.thread_id for p in pending] == ["demo-0", "demo-1", "demo-2"]
        assert all(Path(p.images[0]["ref"]).is_file() for p in pending)
        # The review page's default graph resumes the demo's threads (the model is never loaded to resume).
        final = resolve_escalation(saver, "demo-1", {"type": "answer", "answer": "red"})
        assert final["messages"][-1].content == "red"


def test_a_new_run_starts_from_an_empty_database_and_image_store(tmp_path: Path) -> None:
    guard, _ = scripted_guard(ESCALATE)
    run_demo(items(1), guard=guard, reviewer=None, out_dir=tmp_path)
    stale = ImageStore.beside(tmp_path / "checkpoints.sqlite").put(b"an image of an earlier run", "image/png")
    summary = run_demo(items(2), guard=guard, reviewer=StandInReviewer(accuracy=1.0), out_dir=tmp_path)
    assert (summary.pending_reviews, summary.reviewer_accuracy) == (0, 1.0)
    assert not stale.exists()
    with open_saver(summary.review_db) as saver:
        assert list_escalations(saver) == []


def test_review_later_and_interactive_exclude_each_other() -> None:
    _register()
    result = CliRunner().invoke(app, ["demo", "--interactive", "--review-later"])
    assert (result.exit_code, result.stderr) == (2, "error: give at most one of --interactive and --review-later\n")


@pytest.mark.slow
def test_the_demo_on_the_reference_model_says_how_to_open_the_review_page(tmp_path: Path) -> None:
    _register()
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-n", "200", "--review-later", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    db = out / "checkpoints.sqlite"
    assert f"guardrail escalations serve --db {db}" in result.stdout
    with open_saver(db, read_only=True) as saver:
        pending = list_escalations(saver)
    assert pending  # the default policy escalates a question of these 200 (seed 0)
    assert f"{len(pending)} escalations wait for your review" in " ".join(result.stdout.split())
    for escalation in pending:
        (image,) = escalation.images
        assert Path(image["ref"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert escalation.perception
