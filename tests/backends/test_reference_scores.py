"""Row 0 kept from generation (``ReferenceScoringBackend``) equals row 0 of a full scoring pass, on every family.

Generation runs the prompt's prefill itself (the familiarity evidence) and continues from its KV cache; the answer
tokens' log-probs (and, with ``keep_distributions``, the full distributions) come from generation's own logits.
A score pass given that reference runs only the variant rows. Everything it returns, and every signal the
estimator computes from it, must equal the full pass (row 0 re-scored with the variants) within float tolerance.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import pytest
import torch
from PIL import Image

from guardrail import BackendError, Generation, GenerationOptions, Request
from guardrail.backends import ReferenceScoringBackend, ScoringBackend, TeacherForcedScores
from guardrail.backends.transformers import TransformersBackend
from guardrail.confidence import DecoupledEstimator
from guardrail.confidence.perturb import perturb_image
from tests.support.model_outputs import assert_same_model_output
from tests.support.scores import assert_same_scores, assert_same_signals


def _backend(
    like: TransformersBackend, *, max_new_tokens: int = 12, keep_references: int = 8, keep_distributions: bool = False
) -> TransformersBackend:
    """Another backend over ``like``'s model and processor."""
    return TransformersBackend(
        like.model,
        like.processor,
        device="cpu",
        name=like.name,
        max_new_tokens=max_new_tokens,
        keep_references=keep_references,
        keep_distributions=keep_distributions,
    )


@pytest.fixture
def keeping_backend(family_backend: TransformersBackend) -> TransformersBackend:
    """A family's tiny model that also keeps the full distributions."""
    return _backend(family_backend, keep_distributions=True)


class PlainScoring:
    """The same model as a plain ``ScoringBackend`` (no ``reference``): the estimator scores row 0 itself."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.inner = backend
        self.name = backend.name
        self.patch_size = backend.patch_size

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        return self.inner.generate(request, options)

    def model_images(self, request: Request) -> list[Image.Image]:
        return self.inner.model_images(request)

    def token_offsets(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
        return self.inner.token_offsets(token_ids)

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
    ) -> TeacherForcedScores:
        return self.inner.score(request, token_ids, variants, distributions=distributions)


def _variants(backend: TransformersBackend, request: Request) -> list[list[Image.Image]]:
    images = backend.model_images(request)
    return [
        [perturb_image(im, "blackout", patch_size=backend.patch_size, seed=seed) for im in images] for seed in (1, 2)
    ]


def test_is_a_reference_scoring_backend(keeping_backend: TransformersBackend) -> None:
    assert isinstance(keeping_backend, ReferenceScoringBackend)
    assert not isinstance(PlainScoring(keeping_backend), ReferenceScoringBackend)
    assert isinstance(PlainScoring(keeping_backend), ScoringBackend)


@pytest.mark.parametrize("distributions", [False, True])
def test_the_kept_reference_equals_row_0_of_the_full_pass(
    keeping_backend: TransformersBackend, question: Request, distributions: bool
) -> None:
    gen = keeping_backend.generate(question, GenerationOptions())
    reference = keeping_backend.reference(question, gen, distributions=distributions)
    assert reference is not None
    assert reference.token_ids == gen.token_ids
    variants = _variants(keeping_backend, question)
    full = keeping_backend.score(question, gen.token_ids, variants, distributions=distributions)
    for _ in range(2):  # the first call checks the image processor alone against the processor, the second uses it
        kept = keeping_backend.score(
            question, gen.token_ids, variants, distributions=distributions, reference=reference
        )
        assert kept.token_logprobs.shape == (3, len(gen.token_ids))
        assert_same_scores(kept, full)
    assert keeping_backend._pixels_alone == {(2, 1): True}
    # Without variants: row 0 alone, nothing run through the model.
    alone = keeping_backend.score(question, gen.token_ids, distributions=distributions, reference=reference)
    assert_same_scores(alone, keeping_backend.score(question, gen.token_ids, distributions=distributions))


@pytest.mark.parametrize("full_distribution", [False, True])
def test_signals_equal_those_of_a_plain_scoring_backend(
    keeping_backend: TransformersBackend, question: Request, full_distribution: bool
) -> None:
    estimator = DecoupledEstimator(draws=2, full_distribution=full_distribution)
    gen = keeping_backend.generate(question, GenerationOptions())
    assert keeping_backend.reference(question, gen, distributions=full_distribution) is not None
    kept = estimator.estimate(keeping_backend, question, gen)
    full = estimator.estimate(PlainScoring(keeping_backend), question, gen)
    assert kept.visual is not None
    assert_same_signals(kept, full)


def test_two_images(keeping_backend: TransformersBackend, photo: Image.Image) -> None:
    request = Request.from_question("Which differs?", [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    gen = keeping_backend.generate(request, GenerationOptions(max_new_tokens=4))
    reference = keeping_backend.reference(request, gen, distributions=True)
    assert reference is not None
    variants = _variants(keeping_backend, request)
    full = keeping_backend.score(request, gen.token_ids, variants, distributions=True)
    assert_same_scores(
        keeping_backend.score(request, gen.token_ids, variants, distributions=True, reference=reference), full
    )


def test_generation_is_unchanged_by_keeping(family_backend: TransformersBackend, question: Request) -> None:
    """Continuing from the prefill's cache generates what ``model.generate`` alone does (greedy and sampled)."""
    keeping, plain = _backend(family_backend), _backend(family_backend, keep_references=0)
    for options in (GenerationOptions(), GenerationOptions(temperature=1.0, seed=3)):
        kept, alone = keeping.generate(question, options), plain.generate(question, options)
        assert_same_model_output(kept, alone, name="kept")  # token ids and text exactly, log-probs within tolerance
        assert keeping.reference(question, kept) is not None
        assert plain.reference(question, alone) is None


def test_references_are_found_only_for_the_same_generation_and_request(
    llava_backend: TransformersBackend, question: Request
) -> None:
    gen = llava_backend.generate(question, GenerationOptions(max_new_tokens=4))
    assert llava_backend.reference(question, gen) is not None
    assert llava_backend.reference(question, gen, distributions=True) is None  # keep_distributions is off
    assert llava_backend.reference(question, gen.model_copy()) is None
    assert llava_backend.reference(question.model_copy(), gen) is None
    assert llava_backend.reference(question, Generation(text=gen.text, token_ids=gen.token_ids)) is None


def test_the_last_keep_references_are_kept_and_each_goes_with_its_generation(
    llava_backend: TransformersBackend, question: Request
) -> None:
    backend = _backend(llava_backend, max_new_tokens=3, keep_references=2)
    first, second, third = (backend.generate(question, GenerationOptions()) for _ in range(3))
    assert backend.reference(question, first) is None  # the oldest, evicted
    assert backend.reference(question, second) is not None
    assert backend.reference(question, third) is not None
    del second
    gc.collect()
    assert len(backend._kept) == 1  # dropped with its Generation


def test_a_reference_must_fit_the_answer_and_the_variants(
    llava_backend: TransformersBackend, question: Request
) -> None:
    gen = llava_backend.generate(question, GenerationOptions(max_new_tokens=4))
    reference = llava_backend.reference(question, gen)
    assert reference is not None
    with pytest.raises(BackendError, match="another answer"):
        llava_backend.score(question, [*gen.token_ids, 1], reference=reference)
    with pytest.raises(BackendError, match="no full distributions"):
        llava_backend.score(question, gen.token_ids, distributions=True, reference=reference)
    with pytest.raises(BackendError, match="variant 0 has 2 images"):
        llava_backend.score(question, gen.token_ids, [[Image.new("RGB", (28, 28))] * 2], reference=reference)
    foreign = type(reference).__mro__[1](token_ids=reference.token_ids, scores=reference.scores)
    with pytest.raises(BackendError, match="must be what this backend"):
        llava_backend.score(question, gen.token_ids, reference=foreign)


def test_variants_of_another_size_are_refused(family_backend: TransformersBackend, question: Request) -> None:
    if not family_backend.name.startswith("qwen"):
        pytest.skip("this family resizes every image to one size: another size tokenises alike")
    backend = family_backend
    gen = backend.generate(question, GenerationOptions(max_new_tokens=3))
    reference = backend.reference(question, gen)
    assert reference is not None
    with pytest.raises(BackendError, match="tokenise differently"):
        backend.score(question, gen.token_ids, [[Image.new("RGB", (112, 112))]], reference=reference)


def test_on_the_reference_model_with_its_calibration() -> None:
    """The shipped artifact's familiarity reference was fitted on the scoring pass's evidence: the evidence kept
    from generation gives the same familiarity p-values, shifts and visual scores."""
    from guardrail.calibration.artifact import load_artifact
    from guardrail.data.labelled import easyvqa_items
    from guardrail.pretrained import estimator_for
    from guardrail.reference import reference_model_path

    backend = TransformersBackend.from_pretrained(reference_model_path(), device="cpu")
    estimator = estimator_for(load_artifact(reference_model_path() / "guardrail_calibration.json"))
    assert estimator.familiarity is not None
    for item in easyvqa_items("test", limit=4, seed=0):
        gen = backend.generate(item.request, GenerationOptions())
        kept = estimator.estimate(backend, item.request, gen)
        assert kept.familiarity is not None
        assert_same_signals(kept, estimator.estimate(PlainScoring(backend), item.request, gen))


def test_the_image_processor_alone_is_used_only_where_it_matches(
    keeping_backend: TransformersBackend, question: Request, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode_pixels = keeping_backend._encode_pixels

    def off_by_one(*args: object) -> dict[str, torch.Tensor] | None:
        batch = encode_pixels(*args)  # type: ignore[arg-type]
        return None if batch is None else {**batch, "pixel_values": batch["pixel_values"] + 1}

    monkeypatch.setattr(keeping_backend, "_encode_pixels", off_by_one)
    gen = keeping_backend.generate(question, GenerationOptions())
    reference = keeping_backend.reference(question, gen)
    variants = _variants(keeping_backend, question)
    full = keeping_backend.score(question, gen.token_ids, variants)
    for _ in range(2):
        assert_same_scores(keeping_backend.score(question, gen.token_ids, variants, reference=reference), full)
    assert keeping_backend._pixels_alone == {(2, 1): False}


def test_the_prefill_hooks_are_removed(
    llava_backend: TransformersBackend, question: Request, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = llava_backend.model
    hooks = (len(model._forward_pre_hooks), len(model._forward_hooks))
    llava_backend.generate(question, GenerationOptions(max_new_tokens=2))
    assert (len(model._forward_pre_hooks), len(model._forward_hooks)) == hooks

    def broken(**inputs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", broken)
    with pytest.raises(BackendError, match="out of memory"):
        llava_backend.generate(question, GenerationOptions(max_new_tokens=2))
    assert (len(model._forward_pre_hooks), len(model._forward_hooks)) == hooks


@pytest.mark.parametrize("full_distribution", [False, True])
def test_a_black_image_blacked_out_gives_the_same_signals(
    keeping_backend: TransformersBackend, full_distribution: bool
) -> None:
    """The copy equals the original: its row is row 0 on both paths (KL exactly 0), so even s = log(KL + 1e-8) -
    log(H + 1e-8), where float noise in a KL near 0 would show, is the same."""
    request = Request.from_question("What colour is the shape?", [Image.new("RGB", (40, 50))])
    estimator = DecoupledEstimator(blackout_probability=1.0, full_distribution=full_distribution)
    gen = keeping_backend.generate(request, GenerationOptions())
    kept = estimator.estimate(keeping_backend, request, gen)
    full = estimator.estimate(PlainScoring(keeping_backend), request, gen)
    assert kept.features["vision_kl"] == full.features["vision_kl"] == 0.0
    assert_same_signals(kept, full)
