"""The black-box estimator's NumPy probe (``_probe_numpy.py``) equals the torch probe it transcribes.

The light install has no torch, so ``AgreementEstimator`` measures with a NumPy copy of ``probe.py``,
``stability.py`` and ``signals.py``. Here both run on the same random float64 rows and masks (random spans, empty
spans, every token in a span) and must agree within 1e-12: a change made to one and not the other fails.
"""

from __future__ import annotations

import math
from itertools import accumulate

import numpy as np
import pytest
import torch

from guardrail.confidence import _probe_numpy as host
from guardrail.confidence import probe, signals, stability
from guardrail.confidence.normalization import VisualNormalization
from guardrail.responses import char_offsets_from_prefixes, parse_response

TEXT = "<think><vision>a red circle</vision><reasoning>so it is red</reasoning></think> \\boxed{red}"
NORMALIZATIONS = (
    VisualNormalization(mean=-1.0, std=2.0),
    VisualNormalization(mean=0.5, std=0.7, grounding_weight=0.4, stability_weight=0.8),
)
TOL = 1e-12


def _tokens(rng: np.random.Generator, text: str) -> list[str]:
    cuts = sorted(set(rng.integers(1, len(text), size=len(text) // 3).tolist()))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def as_t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def _close(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=TOL, rel=TOL), key


def test_the_constants_are_the_torch_probes() -> None:
    assert (host.LOG_RATIO_CLAMP, host.TOKEN_KL_CLAMP, host.SCORE_EPS) == (
        signals.LOG_RATIO_CLAMP,
        signals.TOKEN_KL_CLAMP,
        signals.SCORE_EPS,
    )


@pytest.mark.parametrize("seed", range(12))
def test_spans_statistics_probe_and_stability_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parsed = parse_response(TEXT)
    tokens = _tokens(rng, TEXT)
    offsets = None if seed % 4 == 0 else char_offsets_from_prefixes(list(accumulate(len(t) for t in tokens)))
    n = len(tokens)
    masks_t, masks_h = probe.span_masks(parsed, offsets, n), host.span_masks(parsed, offsets, n)
    for name in ("vision", "reasoning", "answer"):
        assert getattr(masks_h, name).tolist() == getattr(masks_t, name).tolist(), name
    # log-probs from near-certain to very unlikely, with perturbed rows far below and above (both clamps reached)
    logp = np.log(rng.uniform(1e-6, 1.0, size=n))
    draws, views = int(rng.integers(1, 4)), int(rng.integers(0, 4))
    logq = logp - rng.normal(0.0, 8.0, size=(draws, n))
    logv = logp - np.abs(rng.normal(0.0, 15.0, size=(views, n)))
    _close(host.answer_stats(logp, masks_h), probe.answer_stats(as_t(logp), masks_t))
    _close(
        host.stability_features(logp, logv, masks_h.vision, masks_h.answer),
        stability.stability_features(as_t(logp), as_t(logv), masks_t.vision, masks_t.answer),
    )
    if not masks_h.vision.any():
        return
    normalization = NORMALIZATIONS[seed % 2]
    drop = None if seed % 3 == 0 else float(rng.uniform(0.0, 2.0))
    got = host.visual_probe(logp, logq, masks_h.vision, normalization, stability_drop=drop)
    want = probe.visual_probe(as_t(logp), as_t(logq), masks_t.vision, normalization, stability_drop=drop)
    assert got.visual == pytest.approx(want.visual, abs=TOL)
    assert got.sources == want.sources
    _close(got.features, want.features)


def test_empty_spans_give_no_features() -> None:
    empty = np.zeros(5, dtype=np.bool_)
    assert host.span_stats("reasoning", np.log(np.full(5, 0.5)), empty) == {}
    assert host.stability_features(np.zeros(5), np.zeros((2, 5)), empty, empty) == {"stability_views": 2.0}
    assert host.stability_features(np.zeros(5), np.zeros((0, 5)), ~empty, ~empty) == {"stability_views": 0.0}


def test_inputs_are_not_modified() -> None:
    logp, logq = np.log(np.full(6, 0.8)), np.log(np.full((2, 6), 0.2))
    vision = np.array([False, True, True, False, False, False])
    kept = (logp.copy(), logq.copy(), vision.copy())
    host.visual_probe(logp, logq, vision, NORMALIZATIONS[0])
    host.stability_features(logp, logq, vision, vision)
    for before, after in zip(kept, (logp, logq, vision), strict=True):
        assert np.array_equal(before, after)


def test_a_grounding_weight_outside_the_unit_interval_is_refused() -> None:
    normalization = VisualNormalization.model_construct(mean=0.0, std=1.0, grounding_weight=1.5, stability_weight=0.0)
    with pytest.raises(ValueError, match=r"`grounding_weight` must be in \[0, 1\], got 1.5"):
        host.visual_probe(np.zeros(2), np.zeros((1, 2)), np.ones(2, dtype=np.bool_), normalization)
    assert math.isfinite(
        host.visual_probe(np.zeros(2), -np.ones((1, 2)), np.ones(2, dtype=np.bool_), NORMALIZATIONS[0]).visual
    )
