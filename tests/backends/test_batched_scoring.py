"""Scoring after a batched generation: each row keeps its reference, several answers' variant rows are re-scored in
one padded forward pass (``score_batch``), and the estimator measures several answers at once (``estimate_batch``).

Everything must equal one request at a time within float tolerance, on every family: the scores of each answer, and
the signals measured after a batched generation against those measured after its own generation. An answer that
cannot be scored fails alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from PIL import Image

from guardrail import BackendError, EstimatorError, Generation, GenerationOptions, InputError, Request, Signals
from guardrail.backends import BatchScoringBackend, ScoringItem, TeacherForcedScores
from guardrail.backends.batching import score_each, score_item
from guardrail.backends.transformers import TransformersBackend
from guardrail.confidence import BatchEstimator, DecoupledEstimator
from guardrail.confidence.perturb import perturb_image
from tests.support.model_outputs import assert_same_model_output
from tests.support.scores import assert_same_scores, assert_same_signals


def _requests() -> list[Request]:
    """Questions of different lengths on images of different sizes (padding and image grids both exercised)."""
    rng = np.random.default_rng(5)
    questions = ["What colour is the shape?", "Is there a circle?", "What shape is it, and is it red or blue?"]
    return [
        Request.from_question(q, [Image.fromarray(rng.integers(0, 256, size=(40 + 8 * i, 50, 3), dtype=np.uint8))])
        for i, q in enumerate(questions * 2)
    ]


def _backend(like: TransformersBackend, *, keep_references: int = 8) -> TransformersBackend:
    """Another backend over ``like``'s model that also keeps full distributions."""
    return TransformersBackend(
        like.model,
        like.processor,
        device="cpu",
        name=like.name,
        max_new_tokens=12,
        keep_references=keep_references,
        keep_distributions=True,
    )


def _variants(
    backend: TransformersBackend, request: Request, seeds: Sequence[int]
) -> tuple[tuple[Image.Image, ...], ...]:
    images = backend.model_images(request)
    return tuple(
        tuple(perturb_image(im, "blackout", patch_size=backend.patch_size, seed=s) for im in images) for s in seeds
    )


@contextmanager
def _forward_passes(backend: TransformersBackend) -> Iterator[list[int]]:
    """Counts the model's forward passes (their batch sizes) while open."""
    sizes: list[int] = []

    def count(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sizes.append(int(kwargs["input_ids"].shape[0]))

    handle = backend.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


def test_a_batched_generation_keeps_each_rows_reference(family_backend: TransformersBackend) -> None:
    backend = _backend(family_backend, keep_references=2)  # fewer than the batch: a batch keeps all of its own
    requests = _requests()
    alone, kept_alone = [], []
    for request in requests:  # each reference taken at once: this backend keeps only the last two generations'
        alone.append(backend.generate(request, GenerationOptions()))
        kept_alone.append(backend.reference(request, alone[-1], distributions=True))
    together = backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    for request, one, batched, reference in zip(requests, alone, together, kept_alone, strict=True):
        kept = backend.reference(request, batched, distributions=True)
        assert kept is not None
        assert reference is not None
        assert kept.token_ids == one.token_ids
        assert kept.distributions is not None
        # the scores and distributions within the model-output tolerance; the row's integer inputs (prompt_inputs:
        # ids, masks, grids) exactly, as encoding it alone gives them
        assert_same_model_output(kept, reference, name="kept reference")
        assert getattr(kept, "prompt_inputs")  # noqa: B009


@pytest.mark.parametrize("distributions", [False, True])
def test_score_batch_equals_scoring_each_answer_alone(family_backend: TransformersBackend, distributions: bool) -> None:
    backend = _backend(family_backend)
    assert isinstance(backend, BatchScoringBackend)
    requests = _requests()
    generations = backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    items = [
        ScoringItem(r, g.token_ids, _variants(backend, r, (1, 2)), backend.reference(r, g, distributions=distributions))
        for r, g in zip(requests, generations, strict=True)
    ]
    items[1] = ScoringItem(items[1].request, items[1].token_ids, items[1].variants)  # no reference: row 0 scored
    items[2] = ScoringItem(items[2].request, items[2].token_ids, (), items[2].reference)  # no variants: row 0 alone
    batched = backend.score_batch(items, distributions=distributions)
    assert len(batched) == len(items)
    for item, scores in zip(items, batched, strict=True):
        assert scores.token_logprobs.shape == (1 + len(item.variants), len(item.token_ids))
        assert_same_scores(scores, score_item(backend, item, distributions=distributions))
        # and what scoring row 0 too gives, reference or not
        assert_same_scores(
            scores, backend.score(item.request, item.token_ids, item.variants, distributions=distributions)
        )


def test_the_variant_rows_of_many_answers_take_one_forward_pass(llava_backend: TransformersBackend) -> None:
    backend = _backend(llava_backend, keep_references=16)
    requests = _requests() * 2
    generations = backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    assert len({len(g.token_ids) for g in generations} | {len(r.question) for r in requests}) > 2  # padded rows
    items = [
        ScoringItem(r, g.token_ids, _variants(backend, r, (3,)), backend.reference(r, g))
        for r, g in zip(requests, generations, strict=True)
    ]
    with _forward_passes(backend) as passes:
        batched = backend.score_batch(items)
    assert passes == [len(items)]
    for item, scores in zip(items, batched, strict=True):
        assert_same_scores(scores, score_item(backend, item))


def test_an_answer_that_cannot_be_scored_fails_alone(llava_backend: TransformersBackend) -> None:
    backend = _backend(llava_backend)
    requests = _requests()[:3]
    generations = backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    items = [
        ScoringItem(r, g.token_ids, _variants(backend, r, (1,)), backend.reference(r, g))
        for r, g in zip(requests, generations, strict=True)
    ]
    items[1] = ScoringItem(items[1].request, (*items[1].token_ids, 7), items[1].variants, items[1].reference)
    with pytest.raises(BackendError, match="another answer"):
        backend.score_batch(items)
    each = score_each(backend, items)
    assert isinstance(each[1], BackendError)
    for i in (0, 2):
        scores = each[i]
        assert isinstance(scores, TeacherForcedScores)
        assert_same_scores(scores, score_item(backend, items[i]))


@pytest.mark.parametrize("full_distribution", [False, True])
def test_signals_after_a_batched_generation_equal_those_after_one(
    family_backend: TransformersBackend, full_distribution: bool
) -> None:
    backend = _backend(family_backend)
    estimator = DecoupledEstimator(draws=2, full_distribution=full_distribution)
    assert isinstance(estimator, BatchEstimator)
    requests = _requests()
    alone = [estimator.estimate(backend, r, backend.generate(r, GenerationOptions())) for r in requests]
    generations = backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    with _forward_passes(backend) as passes:
        batched = estimator.estimate_batch(backend, requests, generations)
    assert len(passes) < len(requests)  # the answers' variant rows went together (one pass per image size)
    assert sum(passes) == 2 * len(requests)  # the two perturbed copies of each answer, never row 0 again
    for one, signals in zip(alone, batched, strict=True):
        assert isinstance(signals, Signals)
        assert signals.visual is not None
        assert_same_signals(signals, one)


def test_an_answer_whose_scoring_fails_fails_alone(llava_backend: TransformersBackend) -> None:
    """Its estimate is an ``EstimatorError`` (the guard's ``on_error`` then decides); the others are measured."""
    backend = _backend(llava_backend)
    estimator = DecoupledEstimator()
    requests = _requests()[:4]
    generations = backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    broken = requests[2]
    score = backend.score

    def failing_score(request: Request, *args: Any, **kwargs: Any) -> TeacherForcedScores:
        if request is broken:
            raise BackendError("out of memory")
        return score(request, *args, **kwargs)

    original_batch = backend.score_batch

    def failing_batch(items: Sequence[ScoringItem], **kwargs: Any) -> list[TeacherForcedScores]:
        if any(item.request is broken for item in items):
            raise BackendError("out of memory")
        return original_batch(items, **kwargs)

    setattr(backend, "score", failing_score)  # noqa: B010
    setattr(backend, "score_batch", failing_batch)  # noqa: B010
    measured = estimator.estimate_batch(backend, requests, generations)
    error = measured[2]
    assert isinstance(error, EstimatorError)
    assert "out of memory" in str(error)
    for i in (0, 1, 3):
        signals = measured[i]
        assert isinstance(signals, Signals)
        assert_same_signals(signals, estimator.estimate(backend, requests[i], generations[i]))


def test_an_estimate_that_cannot_begin_fails_alone(llava_backend: TransformersBackend) -> None:
    estimator = DecoupledEstimator()
    requests = _requests()[:3]
    generations: list[Generation] = llava_backend.generate_batch(requests, [GenerationOptions()] * 3)
    bad = Request.from_question("What colour?", [b"not an image"])
    measured = estimator.estimate_batch(llava_backend, [requests[0], bad, requests[2]], generations)
    assert isinstance(measured[1], Exception)
    assert isinstance(measured[0], Signals)
    assert isinstance(measured[2], Signals)


def test_on_the_reference_model_with_its_calibration() -> None:
    """The shipped model and artifact: familiarity, shifts and visual scores measured after one batched generation
    and one batched scoring pass equal those of each question generated and measured alone."""
    from guardrail.calibration.artifact import load_artifact
    from guardrail.data.labelled import easyvqa_items
    from guardrail.pretrained import estimator_for
    from guardrail.reference import reference_model_path

    backend = TransformersBackend.from_pretrained(reference_model_path(), device="cpu")
    estimator = estimator_for(load_artifact(reference_model_path() / "guardrail_calibration.json"))
    requests = [item.request for item in easyvqa_items("test", limit=6, seed=0)]
    alone = [estimator.estimate(backend, r, backend.generate(r, GenerationOptions())) for r in requests]
    generations = backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    with _forward_passes(backend) as passes:
        batched = estimator.estimate_batch(backend, requests, generations)
    # one pass: each answer's probe copy and its stability views, every row of every answer together
    assert passes == [len(requests) * (1 + estimator.stability.count)]
    for one, signals in zip(alone, batched, strict=True):
        assert isinstance(signals, Signals)
        assert signals.familiarity is not None
        assert_same_signals(signals, one)


def test_an_unreferenced_answer_to_a_question_too_long_for_the_model_fails_alone(
    llava_backend: TransformersBackend,
) -> None:
    backend = _backend(llava_backend)
    requests = _requests()[:2]
    generations = backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    items = [
        ScoringItem(r, g.token_ids, _variants(backend, r, (1,)), backend.reference(r, g))
        for r, g in zip(requests, generations, strict=True)
    ]
    long = Request.from_question("Is there a circle? " * 600, requests[0].images)
    items.insert(1, ScoringItem(long, items[0].token_ids, items[0].variants))  # no reference: never generated here
    with _forward_passes(backend) as passes:
        each = score_each(backend, items)
    assert isinstance(each[1], InputError)
    assert "its prompt takes at least" in str(each[1])
    assert passes == [2]  # the other two answers' variant rows, together; nothing for the refused one
    for i in (0, 2):
        scores = each[i]
        assert isinstance(scores, TeacherForcedScores)
        assert_same_scores(scores, score_item(backend, items[i]))
