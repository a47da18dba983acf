"""``fetch_more_views``: where the fetched views go (``mode``), how many are asked for, and what the provider sees.

Control flow with a scripted model that records its requests; the prompt-length claim with the real reference
model (a one-image LLaVA with 256 positions).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from guardrail import Guard, ImageBlock, Policy, Request
from guardrail.images import decode_image
from guardrail.loop import views_placement
from guardrail.types import Action, Message, TextBlock
from guardrail.views import ZoomProvider
from tests.support.fakes import ScriptedModel, Step

QUESTION = "What colour is the shape?"
DOUBT, SURE = Step(visual=0.2, reasoning=0.9), Step(answer="red", visual=0.9, reasoning=0.9)


@dataclass
class LimitedModel(ScriptedModel):
    """The scripted model, declaring how many images one prompt may carry."""

    max_images: int | None = None


class RecordingZoom:
    """The zoom provider, recording every request and count it is asked for."""

    def __init__(self, extra: int = 0) -> None:
        self.calls: list[tuple[Request, int]] = []
        self.extra = extra  # images returned beyond the count asked for (a provider breaking "up to count")

    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        self.calls.append((request, count))
        return ZoomProvider()(request, count + self.extra)


def views_policy(*, attempts: int = 2, views: int = 2, mode: str | None = None, **extra: Any) -> Policy:
    params: dict[str, Any] = {"views": views, "provider": "zoom"}
    if mode is not None:
        params["mode"] = mode
    rules = [{"when": {"visual": {"below": 0.5}}, "do": "fetch_more_views", "with": params}]
    data = {"version": 1, "name": "views", "budget": {"max_attempts": attempts, "max_seconds": 5}, "rules": rules}
    # The guards here have no calibrator: the policy decides on the scripted (or raw) scores all the same.
    return Policy.model_validate({**data, "otherwise": "accept", "accept_uncalibrated": True, **extra})


def scene() -> Image.Image:
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    image.paste((255, 0, 0), (16, 16, 48, 48))  # a red square in the centre
    image.paste((0, 0, 255), (0, 0, 16, 16))  # a blue corner, outside the centre crop
    return image


def run(
    steps: Sequence[Step], policy: Policy, *, max_images: int | None = None, extra: int = 0
) -> tuple[LimitedModel, RecordingZoom, Request]:
    model = LimitedModel(steps=steps, max_images=max_images)
    zoom = RecordingZoom(extra)
    request = Request.from_question(QUESTION, [scene()], system="Answer briefly.")
    Guard(model, estimator=model, policy=policy, view_providers={"zoom": zoom}).run(request)
    return model, zoom, request


def pixels(block: ImageBlock) -> bytes:
    return decode_image(block).convert("RGB").tobytes()


# ---------------------------------------------------------------------------------------------------------------
# Placement rules and the request edit


@pytest.mark.parametrize(
    ("mode", "views", "max_images", "present", "expected"),
    [
        ("auto", 2, None, 1, (False, 2)),  # nothing declared: append, as before
        ("auto", 2, 1, 1, (True, 1)),  # a one-image model: replace, one view
        ("auto", 4, 1, 0, (True, 1)),
        ("auto", 2, 3, 1, (False, 2)),  # fits: append
        ("auto", 2, 2, 1, (True, 2)),  # would not fit: replace
        ("replace", 3, None, 1, (True, 3)),
        ("replace", 3, 2, 1, (True, 2)),
        ("append", 2, 1, 1, (False, 2)),  # asked for explicitly: appended whatever the limit
    ],
)
def test_views_placement(
    mode: str, views: int, max_images: int | None, present: int, expected: tuple[bool, int]
) -> None:
    assert views_placement(mode, views, max_images=max_images, present=present) == expected


def test_replace_swaps_the_images_of_the_last_user_message_with_images_and_keeps_its_text() -> None:
    old = [ImageBlock.from_pil(Image.new("RGB", (8, 8), c)) for c in ("red", "green", "blue")]
    new = [ImageBlock.from_pil(Image.new("RGB", (8, 8), c)) for c in ("white", "black")]
    first_turn = Message(role="user", content=(old[0], TextBlock(text="earlier")))
    last_turn = Message(role="user", content=(TextBlock(text="Look:"), old[1], old[2], TextBlock(text=QUESTION)))
    request = Request(
        messages=(
            Message(role="system", content=(TextBlock(text="sys"),)),
            first_turn,
            Message(role="assistant", content=(TextBlock(text="ok"),)),
            last_turn,
            Message(role="user", content=(TextBlock(text="and?"),)),  # the last user message, without images
        )
    )
    replaced = request.replacing_images(new)
    assert replaced.messages[:3] == request.messages[:3]  # earlier turns untouched
    assert replaced.messages[3].content == (TextBlock(text="Look:"), new[0], new[1], TextBlock(text=QUESTION))
    assert replaced.messages[4] == request.messages[4]
    assert replaced.question == "and?"
    assert request.messages[3] == last_turn  # the input is not modified


def test_replace_without_any_image_adds_the_views_to_the_last_user_message() -> None:
    view = ImageBlock.from_pil(Image.new("RGB", (8, 8), "red"))
    replaced = Request.from_question(QUESTION).replacing_images([view])
    assert replaced.images == (view,)
    assert replaced.question == QUESTION


# ---------------------------------------------------------------------------------------------------------------
# The guard with a scripted model


def test_append_mode_adds_the_views_after_the_original() -> None:
    model, zoom, request = run([DOUBT, SURE], views_policy(mode="append"), max_images=1)
    second = model.calls[1][0]
    assert len(second.images) == 3  # appended although the model declares one image: asked for explicitly
    assert second.images[0] == request.images[0]
    assert zoom.calls[0][1] == 2
    assert second.question == QUESTION


def test_replace_mode_swaps_the_image_for_the_views_and_keeps_the_text() -> None:
    model, zoom, request = run([DOUBT, SURE], views_policy(mode="replace"))
    second = model.calls[1][0]
    expected = ZoomProvider()(request, 2)
    assert [pixels(v) for v in second.images] == [pixels(v) for v in expected]
    assert request.images[0] not in second.images
    assert second.question == QUESTION
    assert second.messages[0] == request.messages[0]  # the system message stays
    assert zoom.calls[0][1] == 2  # no max_images declared: as many views as the policy asks for


def test_replace_asks_for_at_most_max_images_views() -> None:
    model, zoom, request = run([DOUBT, SURE], views_policy(mode="replace", views=4), max_images=1)
    assert [count for _, count in zoom.calls] == [1]
    second = model.calls[1][0]
    assert len(second.images) == 1
    assert pixels(second.images[0]) == pixels(ZoomProvider()(request, 1)[0])  # the centre, zoomed in


def test_a_provider_returning_more_than_asked_is_cut_to_the_count() -> None:
    model, _, _ = run([DOUBT, SURE], views_policy(mode="replace", views=3), max_images=1, extra=2)
    assert len(model.calls[1][0].images) == 1


@pytest.mark.parametrize(("max_images", "images"), [(None, 3), (1, 1), (3, 3), (2, 2)])
def test_auto_mode_picks_by_the_backends_max_images(max_images: int | None, images: int) -> None:
    model, _, request = run([DOUBT, SURE], views_policy(), max_images=max_images)  # mode left at auto
    second = model.calls[1][0]
    assert len(second.images) == images
    assert (second.images[0] == request.images[0]) is (images == 3)  # appended after the original, or replaced
    assert second.question == QUESTION


def test_the_provider_always_gets_the_original_request() -> None:
    for mode in ("append", "replace"):
        model, zoom, request = run([DOUBT, DOUBT, SURE], views_policy(attempts=3, mode=mode), max_images=1)
        assert len(zoom.calls) == 2
        assert all(asked is request for asked, _ in zoom.calls), mode
        third = model.calls[2][0]
        if mode == "replace":  # each fetch replaces again: the centre of the original, never a crop of a crop
            assert len(third.images) == 1
            assert pixels(third.images[0]) == pixels(ZoomProvider()(request, 1)[0])
        else:
            assert len(third.images) == 5
            assert third.images[0] == request.images[0]


def test_a_re_ask_after_replacing_keeps_the_views() -> None:
    rules = [
        {"when": {"attempt": {"below": 1}}, "do": "fetch_more_views", "with": {"views": 2}},
        {"when": {"attempt": {"below": 2}}, "do": "re_ask", "with": {"prompt": "Look again."}},
    ]
    policy = views_policy(attempts=3, rules=rules)
    model, _, request = run([DOUBT, DOUBT, SURE], policy, max_images=1)
    third = model.calls[2][0]
    assert len(third.images) == 1
    assert third.images[0] != request.images[0]
    assert third.question == f"{QUESTION}\nLook again."


def test_the_trace_reports_the_count_asked_for() -> None:
    from contextlib import contextmanager

    from guardrail.telemetry import CallTrace, Telemetry

    counts: list[int] = []

    class Trace(CallTrace):
        def views_fetched(self, provider: str, count: int, error: Any) -> None:
            counts.append(count)

    class Recording(Telemetry):
        @contextmanager
        def call(self, request: Request, *, model: str, policy: str, policy_version: int) -> Iterator[CallTrace]:
            yield Trace()

    model = LimitedModel(steps=[DOUBT, SURE], max_images=1)
    guard = Guard(model, estimator=model, policy=views_policy(views=3), telemetry=Recording())
    result = guard.run(Request.from_question(QUESTION, [scene()]))
    assert [d.action for d in result.decisions] == [Action.FETCH_MORE_VIEWS, Action.ACCEPT]
    assert result.decisions[0].params["mode"] == "auto"
    assert counts == [1]


def test_arun_places_the_views_like_run() -> None:
    model = LimitedModel(steps=[DOUBT, SURE], max_images=1)
    guard = Guard(model, estimator=model, policy=views_policy())
    request = Request.from_question(QUESTION, [scene()])
    result = asyncio.run(guard.arun(request))
    assert result.status == "accepted"
    second = model.calls[1][0]
    assert len(second.images) == 1
    assert pixels(second.images[0]) == pixels(ZoomProvider()(request, 1)[0])


def test_a_backend_with_a_nonsense_max_images_counts_as_undeclared() -> None:
    model = LimitedModel(steps=[DOUBT, SURE])
    model.max_images = 0
    Guard(model, estimator=model, policy=views_policy()).run(Request.from_question(QUESTION, [scene()]))
    assert len(model.calls[1][0].images) == 3


# ---------------------------------------------------------------------------------------------------------------
# The real reference model: replacing keeps the prompt within its 256 positions


@pytest.fixture
def transformers_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """transformers logs (not warns) through its own handler without propagating: listen on its logger."""
    logger = logging.getLogger("transformers")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def test_reference_model_prompts_stay_within_its_length_when_views_replace(
    transformers_log: pytest.LogCaptureFixture,
) -> None:
    from guardrail.backends import TransformersBackend
    from guardrail.pretrained import estimator_for
    from guardrail.reference import reference_model_path

    backend = TransformersBackend.from_pretrained(reference_model_path(), device="cpu", max_images=1, max_new_tokens=32)
    limit = backend.tokenizer.model_max_length
    assert limit == 256
    request = Request.from_question("What color is the shape?", [scene()])

    def always_fetch(attempts: int, mode: str) -> Guard:
        fetch = {"views": 4, "mode": mode}
        rules = [{"when": {"attempt": {"below": attempts - 1}}, "do": "fetch_more_views", "with": fetch}]
        budget = {"max_attempts": attempts, "max_seconds": None}
        policy = views_policy(attempts=attempts, rules=rules, budget=budget)
        return Guard(backend, estimator=estimator_for(None), policy=policy)

    result = always_fetch(3, "auto").run(request)  # two fetches of four views: replaced by one for this model
    assert len(result.attempts) == 3
    assert result.error is None
    for attempt in result.attempts:
        assert attempt.generation is not None
        assert attempt.generation.usage is not None
        assert len((attempt.request or request).images) == 1
        assert attempt.generation.usage.input_tokens + attempt.generation.usage.output_tokens <= limit
    assert not [r for r in transformers_log.records if "sequence length is longer" in r.getMessage()]

    # Appending (what happened before) would run past the model's 256 positions: the backend refuses that prompt
    # before the model runs (an input error naming its length, so the call ends in on_error, never an answer).
    last = always_fetch(2, "append").run(request).attempts[-1]
    assert last.request is not None
    assert len(last.request.images) == 5
    assert last.generation is None
    assert last.error is not None
    assert last.error.type == "InputError"
    length = re.search(r"its prompt takes (\d+) tokens, over the limit of 224 ", last.error.message)
    assert length is not None
    assert int(length.group(1)) > limit
