"""Remedies that shape the next answer, end to end through a real ``Guard`` on the shipped reference model:
``fetch_more_views`` mode ``tile`` (tiles answered alone, percepts merged, the original request answered continuing
from the merge) and ``re_ask`` with ``keep_percept`` and ``samples`` (self-consistency on the model's own percept).

The reference model is an easy-VQA model (one shape, 64 px); these tests check the mechanics, with a toy merger
that records what it is given. What the remedies repair on the scenes world is measured by the benchmarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image, ImageDraw

from guardrail import Guard, Policy, Request
from guardrail.errors import ConfigurationError
from guardrail.pretrained import load_guard
from guardrail.responses import majority_answer, parse_response, percept_head
from guardrail.types import Action, Box
from guardrail.views import tile_boxes


class ToyMerger:
    """Keeps the percept most tiles give (the reference model names one shape per picture) and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[Box, str]], int, int]] = []

    def __call__(self, views: Sequence[tuple[Box, str]], width: int, height: int) -> str:
        self.calls.append((list(views), width, height))
        percepts = [percept for _, percept in views]
        return percepts[majority_answer(percepts)]


def first_attempt_only(action: dict[str, Any]) -> Policy:
    """A policy whose remedy fires after the first attempt, then accepts whatever is measured."""
    rule = {"name": "remedy", "when": {"attempt": {"below": 1}}, **action}
    data = {"version": 1, "name": "remedies", "budget": {"max_attempts": 2, "max_seconds": None}, "rules": [rule]}
    return Policy.model_validate({**data, "otherwise": "accept", "on_error": "abstain"})


TILES = first_attempt_only(
    {"do": "fetch_more_views", "with": {"views": 4, "provider": "tiles", "mode": "tile", "merger": "toy"}}
)
SELF_CONSISTENCY = first_attempt_only(
    {"do": "re_ask", "with": {"keep_percept": True, "samples": 3, "temperature": 1.0}}
)


@pytest.fixture(scope="module")
def reference() -> Guard:
    return load_guard(policy=TILES, percept_mergers={"toy": ToyMerger()})


def guard_with(reference: Guard, policy: Policy, merger: ToyMerger | None = None) -> Guard:
    return Guard(
        reference.backend,
        estimator=reference.estimator,
        calibrator=reference.calibrator,
        policy=policy,
        percept_mergers={"toy": merger or ToyMerger()},
    )


def scene() -> Image.Image:
    """A red circle in the top-left quadrant of a 64 x 64 picture."""
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(image).ellipse((4, 4, 28, 28), fill=(255, 0, 0))
    return image


REQUEST = Request.from_question("What color is the shape?", [scene()])


def test_tile_mode_answers_each_tile_merges_and_reasons_on_the_merge(reference: Guard) -> None:
    merger = ToyMerger()
    result = guard_with(reference, TILES, merger).run(REQUEST)

    first, second = result.attempts
    assert first.decision.action is Action.FETCH_MORE_VIEWS
    [(views, width, height)] = merger.calls
    assert (width, height) == (64, 64)
    assert [box for box, _ in views] == tile_boxes(64, 64, 4)
    assert [tile.box for tile in second.tile_percepts] == tile_boxes(64, 64, 4)
    assert [tile.percept for tile in second.tile_percepts] == [percept for _, percept in views]
    assert all(percept.startswith("I see") for _, percept in views)
    merged = merger(views, width, height)
    assert second.percept == merged
    # The original request (the whole picture), continuing from the merged percept in the model's own format.
    assert second.request == REQUEST
    assert second.generation is not None
    assert second.generation.text.startswith(f"<think><vision>{merged}</vision>")
    assert second.generation.options is not None
    assert second.generation.options.assistant_prefix == f"<think><vision>{merged}</vision>"
    # Measured and decided like any attempt.
    assert second.confidence is not None
    assert second.confidence.visual is not None
    assert result.status == "accepted"
    assert result.answer == second.generation.final_answer


def test_tile_mode_is_the_same_through_arun_and_run_batch(reference: Guard) -> None:
    ran = guard_with(reference, TILES).run(REQUEST)
    awaited = asyncio.run(guard_with(reference, TILES).arun(REQUEST))
    batched = guard_with(reference, TILES).run_batch([REQUEST, REQUEST], batch_size=2)
    for other in (awaited, *batched):
        assert [a.tile_percepts for a in other.attempts] == [a.tile_percepts for a in ran.attempts]
        assert other.attempts[-1].percept == ran.attempts[-1].percept
        assert other.answer == ran.answer


def test_self_consistency_reasons_again_on_the_own_percept(reference: Guard) -> None:
    result = guard_with(reference, SELF_CONSISTENCY).run(REQUEST)
    first, second = result.attempts
    assert first.generation is not None
    assert second.generation is not None
    head = percept_head(first.generation.text)
    assert head is not None
    assert second.percept == parse_response(first.generation.text).perception_text
    assert second.generation.text.startswith(head)
    assert len(second.sampled_answers) == 3
    assert second.generation.answer == second.sampled_answers[majority_answer(second.sampled_answers)]
    assert second.generation.options is not None
    assert second.generation.options.temperature == 1.0
    assert second.confidence is not None
    assert result.final_decision.action is Action.ACCEPT


def test_a_policy_tiling_with_a_provider_that_gives_no_tiles_is_refused(reference: Guard) -> None:
    policy = first_attempt_only(
        {"do": "fetch_more_views", "with": {"views": 4, "provider": "zoom", "mode": "tile", "merger": "toy"}}
    )
    with pytest.raises(ConfigurationError, match=r"mode tile from 'zoom', which gives no tiles"):
        guard_with(reference, policy)


def test_a_policy_naming_an_unknown_merger_is_refused(reference: Guard) -> None:
    policy = first_attempt_only(
        {"do": "fetch_more_views", "with": {"views": 4, "provider": "tiles", "mode": "tile", "merger": "nosuch"}}
    )
    with pytest.raises(ConfigurationError, match=r"merges percepts with 'nosuch', but the guard has only"):
        guard_with(reference, policy)


def test_a_failing_merger_ends_in_on_error(reference: Guard) -> None:
    def broken(views: Sequence[tuple[Box, str]], width: int, height: int) -> str:
        raise RuntimeError("cannot merge")

    guard = Guard(
        reference.backend,
        estimator=reference.estimator,
        calibrator=reference.calibrator,
        policy=TILES,
        percept_mergers={"toy": broken},
    )
    result = guard.run(REQUEST)
    assert result.status == "abstained"
    assert result.final_decision.rule == "on_error"
    assert result.error is not None
    assert (result.error.stage, result.error.message) == ("view_provider", "cannot merge")
    assert len(result.attempts) == 1
