"""What an escalation puts before a reviewer: images by reference and hash, perception, reasoning, the rule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from guardrail import Guard, ImageBlock, Policy, Request
from guardrail.integrations import ImageStore, guardrail_graph, list_escalations, open_saver, resolve_escalation
from guardrail.integrations._review import review_payload
from guardrail.integrations.image_store import INLINE_LIMIT
from tests.support.fakes import ScriptedModel, Step
from tests.support.graphs import build_graph
from tests.support.integration import ESCALATE, image_message, later_escalation_guard, png_bytes, scripted_guard

THREAD: RunnableConfig = {"configurable": {"thread_id": "t-1"}}


def escalate_in_sqlite(db: Path, message: HumanMessage | None = None) -> dict[str, Any]:
    with open_saver(db, must_exist=False) as saver:
        state = build_graph(saver).invoke({"messages": [message or image_message()]}, THREAD)
    payload: dict[str, Any] = state["__interrupt__"][0].value
    return payload


def test_a_sqlite_graph_stores_the_image_beside_the_database_and_names_it_by_path_and_hash(tmp_path: Path) -> None:
    payload = escalate_in_sqlite(tmp_path / "agent.sqlite")
    (image,) = payload["images"]
    stored = Path(image["ref"])
    assert stored.parent.parent == tmp_path / "agent.sqlite.images"
    assert stored.read_bytes() == png_bytes()
    assert image == {
        "ref": str(stored),
        "sha256": hashlib.sha256(png_bytes()).hexdigest(),
        "mime_type": "image/png",
        "size": len(png_bytes()),
        "source": "request",
    }
    assert "base64" not in json.dumps(payload)  # no image bytes in the payload


def test_the_payload_has_perception_reasoning_rule_and_the_components_the_rule_tested(tmp_path: Path) -> None:
    payload = escalate_in_sqlite(tmp_path / "agent.sqlite")
    assert payload["perception"] == "v"  # the scripted model writes <vision>v</vision><reasoning>r</reasoning>
    assert payload["reasoning"] == "r"
    assert payload["response"] is None
    assert payload["rule"] == "rules[0] both-low"
    assert payload["components"] == ["overall"]
    assert payload["error"] is None
    assert payload["policy"] == "integration"


def test_a_response_without_tags_is_shown_whole() -> None:
    guard, _ = scripted_guard(ESCALATE)
    request = Request.from_question("What colour is the shape?", [png_bytes()])
    result = guard.run(request)
    (attempt,) = result.attempts
    assert attempt.generation is not None
    untagged = attempt.generation.model_copy(update={"text": "It is green, I think. \\boxed{green}"})
    result = result.model_copy(update={"attempts": (attempt.model_copy(update={"generation": untagged}),)})
    payload = review_payload(result, request=request)
    assert (payload["perception"], payload["reasoning"]) == (None, None)
    assert payload["response"] == "It is green, I think. \\boxed{green}"


def test_without_a_store_small_images_travel_inline_and_large_ones_by_hash_only() -> None:
    guard, _ = scripted_guard(ESCALATE)
    small = png_bytes()
    large = Image.effect_noise((160, 160), 100).convert("RGB")
    request = Request.from_question("What colour is the shape?", [small, large])
    payload = review_payload(guard.run(request), request=request)
    inline, named = payload["images"]
    assert inline["ref"].startswith("data:image/png;base64,")
    assert named["size"] > INLINE_LIMIT
    assert named["ref"] is None
    assert named["sha256"] == hashlib.sha256(request.images[1].data()).hexdigest()
    assert "no image store" in named["note"]
    assert len(json.dumps(payload)) < INLINE_LIMIT * 2


def test_an_explicit_store_is_used_by_any_graph(tmp_path: Path) -> None:
    guard, _ = scripted_guard(ESCALATE)
    graph = guardrail_graph(guard, checkpointer=InMemorySaver(), image_store=tmp_path / "images")
    state = graph.invoke({"messages": [image_message()]}, THREAD)
    (image,) = state["__interrupt__"][0].value["images"]
    assert Path(image["ref"]).is_relative_to(tmp_path / "images")


def test_views_the_candidate_was_shown_follow_the_question_images(tmp_path: Path) -> None:
    rules = [{"when": {"visual": {"below": 0.5}}, "do": "fetch_more_views",
              "with": {"views": 1, "provider": "zoom", "mode": "replace"}}]  # fmt: skip
    policy = Policy.model_validate(
        {"version": 1, "name": "views", "budget": {"max_attempts": 2, "max_seconds": None}, "rules": rules,
         "otherwise": "accept", "on_exhausted": {"do": "escalate", "with": {"reason": "still unsure"}},
         "accept_uncalibrated": True}
    )  # fmt: skip
    model = ScriptedModel(steps=(Step(answer="red", visual=0.1, reasoning=0.9), Step(answer="teal", visual=0.4)))
    scene = Image.new("RGB", (64, 64), (255, 255, 255))
    scene.paste((0, 128, 128), (16, 16, 48, 48))
    scene.paste((0, 0, 255), (0, 0, 12, 12))  # outside the zoomed centre: the view differs from the image
    request = Request.from_question("What colour is the shape?", [scene])
    result = Guard(model, estimator=model, policy=policy).run(request)
    payload = review_payload(result, request=request, image_store=ImageStore(tmp_path))
    assert payload["candidate_answer"] == "teal"
    assert [i["source"] for i in payload["images"]] == ["request", "view"]
    assert all(Path(i["ref"]).is_file() for i in payload["images"])
    assert payload["rule"] == "on_exhausted"
    assert payload["components"] == ["visual"]  # the rule whose remedy the budget left no room for


def test_an_image_given_by_path_keeps_its_path_and_is_hashed(tmp_path: Path) -> None:
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes())
    guard, _ = scripted_guard(ESCALATE)
    request = Request.from_question("What colour is the shape?", [ImageBlock(url=str(path))])
    payload = review_payload(guard.run(request), request=request)
    assert payload["images"] == [
        {"ref": str(path), "sha256": hashlib.sha256(png_bytes()).hexdigest(), "mime_type": "image/png",
         "size": len(png_bytes()), "source": "request"}
    ]  # fmt: skip


def test_an_escalation_saved_before_these_fields_still_lists_and_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import guardrail.integrations.langgraph as langgraph

    old_keys = ("kind", "question", "candidate_answer", "confidence", "reason", "policy", "allowed_decisions")

    def old_payload(result: Any, **_: Any) -> dict[str, Any]:
        return {k: v for k, v in review_payload(result).items() if k in old_keys}

    db = tmp_path / "old.sqlite"
    with monkeypatch.context() as patch:
        patch.setattr(langgraph, "review_payload", old_payload)
        payload = escalate_in_sqlite(db)
    assert "images" not in payload
    with open_saver(db) as saver:
        (pending,) = list_escalations(saver)
        assert (pending.images, pending.perception, pending.rule, pending.components) == ((), None, None, ())
        final = resolve_escalation(saver, "t-1", {"type": "approve"}, graph=build_graph)
    assert final["messages"][-1].content == "green"


def test_an_escalation_carries_the_confidences_its_rule_acted_on_beside_the_candidate_s() -> None:
    request = Request.from_question("What colour is the shape?", [png_bytes()])
    result = later_escalation_guard().run(request)
    first, second = result.attempts
    assert result.escalation is not None
    assert result.escalation.candidate_answer == "red"  # the best attempt, the first
    assert result.escalation.confidence == first.confidence
    assert result.escalation.decision_confidence == second.confidence  # the rule fired on the second
    payload = review_payload(result, request=request)
    assert (payload["rule"], payload["components"]) == ("rules[0] both-doubtful", ["visual", "reasoning"])
    assert payload["decision_confidence"]["visual"] == pytest.approx(0.3)
    assert payload["decision_confidence"]["reasoning"] == pytest.approx(0.35)
    assert payload["confidence"]["reasoning"] == pytest.approx(0.53)
    assert payload["perception"] == "v"  # the candidate's own response
