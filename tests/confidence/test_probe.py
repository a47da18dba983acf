"""The visual probe is written once: both estimators measure the same rows the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from array_api_compat import torch as torch_xp
from PIL import Image

from guardrail import AgreementEstimator, DecoupledEstimator, Generation, GenerationOptions, Request
from guardrail.backends import ScoringBackend, TeacherForcedScores, TextScores, TextScoringBackend
from guardrail.confidence.normalization import VisualNormalization
from guardrail.confidence.probe import draws_differ, perturbed_variants, span_masks, visual_probe, visual_statistic
from guardrail.confidence.stability import StabilitySetting
from guardrail.responses import parse_response

TEXT = "<vision>red circle</vision><reasoning>so red</reasoning> \\boxed{red}"
IMAGE = Image.new("RGB", (28, 28), (200, 30, 30))
NORMALIZATION = VisualNormalization(mean=-1.0, std=2.0)


def _rows(draws: int, views: int = 0) -> torch.Tensor:
    """Per-character log-probs: 0.9 under the original image, perception tokens 0.9 * (0.1 + 0.2 k) under draw k,
    and 0.9 * (0.9 - 0.1 j) under the stability probe's view j (after the draws)."""
    start, end = parse_response(TEXT).vision
    rows = torch.full((1 + draws + views, len(TEXT)), math.log(0.9), dtype=torch.float64)
    for k in range(draws):
        rows[1 + k, start:end] = math.log(0.9 * (0.1 + 0.2 * k))
    for j in range(views):
        rows[1 + draws + j, start:end] = math.log(0.9 * (0.9 - 0.1 * j))
    return rows


class WhiteBox:
    """Re-scores token ids: one token a character."""

    name = "white-box"
    patch_size = 14

    def __init__(self, draws: int, views: int = 0) -> None:
        self.draws, self.views = draws, views

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        raise AssertionError("not called")

    def model_images(self, request: Request) -> list[Image.Image]:
        return [IMAGE.copy() for _ in request.images]

    def token_offsets(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(token_ids))]

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
    ) -> TeacherForcedScores:
        assert len(variants) == self.draws + self.views
        return TeacherForcedScores(token_logprobs=_rows(self.draws, self.views).float())


class Server:
    """Re-scores the answer text on the server: tokens are its characters."""

    name = "server"

    def __init__(self, draws: int, views: int = 0) -> None:
        self.draws, self.views = draws, views

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        raise AssertionError("no re-query: the server scores")

    def score_text(self, request: Request, text: str, variants: Sequence[Sequence[Image.Image]] = ()) -> TextScores:
        assert text == TEXT
        assert len(variants) == self.draws + self.views
        rows = _rows(self.draws, self.views)
        return TextScores(text=text, tokens=tuple(text), token_logprobs=tuple(tuple(r.tolist()) for r in rows))


def test_both_estimators_measure_the_stability_probe_identically() -> None:
    """The stability probe's views ride in the same pass (white box) or the same server request (black box), and
    both estimators make the same features and the same visual certainty of them."""
    request = Request.from_question("what colour is the shape?", [IMAGE])
    logp = (math.log(0.9),) * len(TEXT)
    stability = StabilitySetting(family="noise", count=3)
    weighed = VisualNormalization(mean=-1.0, std=2.0, stability_weight=2.0)
    white = DecoupledEstimator(draws=2, normalization=weighed, stability=stability).estimate(
        WhiteBox(2, 3), request, Generation(text=TEXT, token_ids=tuple(ord(c) for c in TEXT), token_logprobs=logp)
    )
    black = AgreementEstimator(scoring_draws=2, normalization=weighed, stability=stability).estimate(
        Server(2, 3), request, Generation(text=TEXT, tokens=tuple(TEXT), token_logprobs=logp)
    )
    # views 0, 1, 2 keep 0.9, 0.8 and 0.7 of the percept's probability: the mean fall is their mean -log
    fall = -(math.log(0.9) + math.log(0.8) + math.log(0.7)) / 3
    for estimate in (white, black):
        assert estimate.features["stability_drop"] == pytest.approx(fall)
        assert estimate.features["stability"] == pytest.approx(math.exp(-fall))
    for name in ("stability_drop", "stability_vision_worst", "stability_answer_drop", "visual_score"):
        assert white.features[name] == pytest.approx(black.features[name], rel=1e-6), name
    assert white.visual == pytest.approx(black.visual, rel=1e-6)
    plain = DecoupledEstimator(draws=2, normalization=NORMALIZATION).estimate(
        WhiteBox(2), request, Generation(text=TEXT, token_ids=tuple(ord(c) for c in TEXT), token_logprobs=logp)
    )
    assert white.features["visual_score"] == pytest.approx(plain.features["visual_score"] - 2.0 * fall)


@pytest.mark.parametrize("draws", [1, 3])
def test_both_estimators_measure_the_same_rows_identically(draws: int) -> None:
    request = Request.from_question("what colour is the shape?", [IMAGE])
    logp = (math.log(0.9),) * len(TEXT)
    white_generation = Generation(text=TEXT, token_ids=tuple(ord(c) for c in TEXT), token_logprobs=logp)
    black_generation = Generation(text=TEXT, tokens=tuple(TEXT), token_logprobs=logp)
    assert isinstance(WhiteBox(draws), ScoringBackend)
    assert isinstance(Server(draws), TextScoringBackend)

    white = DecoupledEstimator(draws=draws, normalization=NORMALIZATION).estimate(
        WhiteBox(draws), request, white_generation
    )
    black = AgreementEstimator(scoring_draws=draws, normalization=NORMALIZATION).estimate(
        Server(draws), request, black_generation
    )

    shared = [
        "vision_kl",
        "vision_kl_std",
        "vision_surprisal",
        "visual_score",
        "visual_certainty",
        "reasoning_mean_prob",
        "reasoning_min_prob",
        "reasoning_tokens",
        "answer_mean_prob",
        "answer_tokens",
    ]
    for name in shared:
        assert white.features[name] == pytest.approx(black.features[name], rel=1e-6), name
    assert white.visual == pytest.approx(black.visual, rel=1e-6)
    assert white.sources["visual"] == black.sources["visual"] == ("vision_kl", "vision_surprisal", "visual_score")
    assert white.features["vision_kl_std"] > 0 if draws > 1 else white.features["vision_kl_std"] == 0


def test_visual_probe_uses_the_full_entropy_when_given() -> None:
    rows = _rows(1)
    vision = span_masks(parse_response(TEXT), [(i, i + 1) for i in range(len(TEXT))], len(TEXT), xp=torch_xp).vision
    entropy = torch.full((len(TEXT),), 0.25, dtype=torch.float64)
    probe = visual_probe(rows[0], rows[1:], vision, NORMALIZATION, entropy=entropy)
    assert probe.features["vision_entropy"] == pytest.approx(0.25)
    assert probe.sources == ("vision_kl", "vision_entropy", "visual_score")
    assert probe.features["visual_score"] == pytest.approx(
        math.log(probe.features["vision_kl"] + 1e-8) - math.log(0.25)
    )


def test_span_masks_without_offsets_select_every_token() -> None:
    masks = span_masks(parse_response(TEXT), None, 5, xp=torch_xp)
    assert masks.vision.all()
    assert masks.reasoning.all()
    assert masks.answer.all()


def test_span_masks_fall_back_to_the_whole_response_without_an_answer() -> None:
    text = "<vision>red</vision> red"
    masks = span_masks(parse_response(text), [(i, i + 1) for i in range(len(text))], len(text), xp=torch_xp)
    assert masks.answer.all()
    assert int(masks.vision.sum()) == len("red")


def test_perturbed_variants_draw_once_when_draws_would_repeat() -> None:
    assert draws_differ("blackout", 0.5)
    assert draws_differ("noise", 0.0)
    assert not draws_differ("blackout", 1.0)
    assert not draws_differ("grey", 0.5)
    images = [IMAGE, IMAGE]
    assert len(perturbed_variants(images, "grey", draws=4, patch_size=14, seed=0, probability=0.5)) == 1
    variants = perturbed_variants(images, "blackout", draws=3, patch_size=14, seed=0, probability=0.5)
    assert [len(v) for v in variants] == [2, 2, 2]
    again = perturbed_variants(images, "blackout", draws=3, patch_size=14, seed=0, probability=0.5)
    assert all(
        a.tobytes() == b.tobytes() for va, vb in zip(variants, again, strict=True) for a, b in zip(va, vb, strict=True)
    )
    assert variants[0][0].tobytes() != variants[1][0].tobytes()  # draws differ (seed + k * n_images + i)


def test_the_grounding_weight_sets_how_much_the_kl_counts_in_s() -> None:
    """s = w log(KL + eps) - log(H + eps): the paper's statistic at w = 1, the certainty alone at w = 0; the
    features it was formed from are recorded either way, and s is reproduced from them."""
    rows = _rows(2)
    vision = span_masks(parse_response(TEXT), [(i, i + 1) for i in range(len(TEXT))], len(TEXT), xp=torch_xp).vision
    paper = visual_probe(rows[0], rows[1:], vision, NORMALIZATION)
    weighted = {
        w: visual_probe(rows[0], rows[1:], vision, NORMALIZATION.model_copy(update={"grounding_weight": w}))
        for w in (0.0, 0.5)
    }
    kl, h = paper.features["vision_kl"], paper.features["vision_surprisal"]
    assert paper.features["visual_score"] == pytest.approx(math.log(kl + 1e-8) - math.log(h + 1e-8))
    assert weighted[0.0].features["visual_score"] == pytest.approx(-math.log(h + 1e-8))
    assert weighted[0.5].features["visual_score"] == pytest.approx(0.5 * math.log(kl + 1e-8) - math.log(h + 1e-8))
    for w, result in ((1.0, paper), *weighted.items()):
        assert result.features["vision_kl"] == kl  # the measurements do not depend on the weight
        assert visual_statistic(result.features, w) == pytest.approx(result.features["visual_score"], abs=1e-6)
    assert visual_statistic({"vision_kl": 0.5}, 1.0) is None  # no certainty measured: no statistic
    with pytest.raises(ValueError, match="grounding_weight"):
        VisualNormalization(grounding_weight=1.5)
