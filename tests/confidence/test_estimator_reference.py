"""The decoupled estimator asks a ``ReferenceScoringBackend`` for row 0 and falls back to scoring it when absent."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from PIL import Image

from guardrail import BackendError, EstimatorError, Generation, GenerationOptions, Request
from guardrail.backends import ReferenceScores, ReferenceScoringBackend, TeacherForcedScores
from guardrail.confidence import DecoupledEstimator

TEXT = "<vision>red</vision><reasoning>so</reasoning>\\boxed{red}"
IMAGE = Image.new("RGB", (28, 28), (200, 30, 30))


class FakeReferenceBackend:
    """One character = one token; probability 0.9 under the original image, 0.1 under a variant. ``kept`` is what
    ``reference`` returns (``None``: nothing kept); every ``score`` call is recorded with its arguments."""

    name = "fake-reference"
    patch_size = 14

    def __init__(self, kept: bool, *, fail: bool = False) -> None:
        self.generation = Generation(
            text=TEXT, token_ids=tuple(map(ord, TEXT)), token_logprobs=(math.log(0.9),) * len(TEXT)
        )
        n = len(TEXT)
        row0 = TeacherForcedScores(token_logprobs=torch.full((1, n), math.log(0.9)), prompt_unknown=0)
        self.kept = ReferenceScores(token_ids=self.generation.token_ids, scores=row0) if kept else None
        self.fail = fail
        self.calls: list[tuple[int, ReferenceScores | None]] = []

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        return self.generation

    def model_images(self, request: Request) -> list[Image.Image]:
        return [IMAGE.copy() for _ in request.images]

    def token_offsets(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(token_ids))]

    def reference(
        self, request: Request, generation: Generation, *, distributions: bool = False
    ) -> ReferenceScores | None:
        return self.kept if generation is self.generation else None

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
        reference: ReferenceScores | None = None,
    ) -> TeacherForcedScores:
        self.calls.append((len(variants), reference))
        if self.fail:
            raise BackendError("scoring broke")
        varied = torch.full((len(variants), len(token_ids)), math.log(0.1))
        if reference is not None:
            return TeacherForcedScores(token_logprobs=torch.cat([reference.scores.token_logprobs, varied]))
        return TeacherForcedScores(
            token_logprobs=torch.cat([torch.full((1, len(token_ids)), math.log(0.9)), varied]), prompt_unknown=0
        )


@pytest.fixture
def request_with_image() -> Request:
    return Request.from_question("What colour?", [IMAGE])


def test_the_fake_is_a_reference_scoring_backend() -> None:
    assert isinstance(FakeReferenceBackend(kept=True), ReferenceScoringBackend)


def test_row_0_comes_from_the_reference_when_kept(request_with_image: Request) -> None:
    with_reference, without = FakeReferenceBackend(kept=True), FakeReferenceBackend(kept=False)
    kept = DecoupledEstimator(draws=2).estimate(with_reference, request_with_image, with_reference.generation)
    scored = DecoupledEstimator(draws=2).estimate(without, request_with_image, without.generation)
    assert with_reference.calls == [(2, with_reference.kept)]
    assert without.calls == [(2, None)]  # nothing kept: row 0 scored with the variants, as a plain ScoringBackend
    assert kept.visual == pytest.approx(scored.visual)
    assert kept.features == pytest.approx(scored.features)


def test_another_generation_is_scored_in_full(request_with_image: Request) -> None:
    backend = FakeReferenceBackend(kept=True)
    copy = backend.generation.model_copy()
    DecoupledEstimator().estimate(backend, request_with_image, copy)
    assert backend.calls == [(1, None)]


def test_a_failed_scoring_is_an_estimator_error(request_with_image: Request) -> None:
    backend = FakeReferenceBackend(kept=True, fail=True)
    with pytest.raises(EstimatorError, match="scoring broke"):
        DecoupledEstimator().estimate(backend, request_with_image, backend.generation)


def test_a_copy_with_the_original_pixels_is_row_0_and_is_not_scored() -> None:
    """Blacking out a black image changes nothing: that copy's row is row 0 (KL exactly 0), no model pass."""
    black = Request.from_question("What colour?", [Image.new("RGB", (28, 28))])
    backend = FakeReferenceBackend(kept=True)
    backend.model_images = lambda request: [Image.new("RGB", (28, 28))]  # type: ignore[method-assign]
    estimator = DecoupledEstimator(blackout_probability=1.0)
    signals = estimator.estimate(backend, black, backend.generation)
    assert backend.calls == [(0, backend.kept)]  # nothing left to run through the model
    assert signals.features["vision_kl"] == 0.0
    assert signals.features["vision_kl_std"] == 0.0
