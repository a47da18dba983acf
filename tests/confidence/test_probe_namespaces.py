"""The probe is written once, for both array libraries: on NumPy arrays and on torch tensors it measures the same.

``signals.py``, ``probe.py`` and ``stability.py`` are written against the array API (``array_api_compat``): the
black-box estimator runs them on float64 NumPy arrays (the light install has no torch), the white-box estimator on
torch tensors. Here the one implementation runs on the same random float64 rows and masks in both libraries
(random spans, empty spans, every token in a span; log-probs that reach both clamps) and must agree within 1e-9;
each result stays in its input's library, and neither input is modified.
"""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Any

import numpy as np
import pytest
import torch
from array_api_compat import numpy as np_xp
from array_api_compat import torch as torch_xp

from guardrail.confidence import probe, signals, stability
from guardrail.confidence.normalization import VisualNormalization
from guardrail.responses import char_offsets_from_prefixes, parse_response

TEXT = "<think><vision>a red circle</vision><reasoning>so it is red</reasoning></think> \\boxed{red}"
NORMALIZATIONS = (
    VisualNormalization(mean=-1.0, std=2.0),
    VisualNormalization(mean=0.5, std=0.7, grounding_weight=0.4, stability_weight=0.8),
)
TOL = 1e-9


def _tokens(rng: np.random.Generator, text: str) -> list[str]:
    cuts = sorted(set(rng.integers(1, len(text), size=len(text) // 3).tolist()))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def as_t(a: np.ndarray[Any, Any]) -> torch.Tensor:
    return torch.from_numpy(a.copy())


def _close(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=TOL, rel=TOL), key


@pytest.mark.parametrize("seed", range(12))
def test_spans_statistics_probe_and_stability_agree_on_numpy_and_torch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parsed = parse_response(TEXT)
    tokens = _tokens(rng, TEXT)
    offsets = None if seed % 4 == 0 else char_offsets_from_prefixes(list(accumulate(len(t) for t in tokens)))
    n = len(tokens)
    masks_n = probe.span_masks(parsed, offsets, n, xp=np_xp)
    masks_t = probe.span_masks(parsed, offsets, n, xp=torch_xp)
    for name in ("vision", "reasoning", "answer"):
        assert isinstance(getattr(masks_n, name), np.ndarray)
        assert isinstance(getattr(masks_t, name), torch.Tensor)
        assert getattr(masks_n, name).tolist() == getattr(masks_t, name).tolist(), name
    # log-probs from near-certain to very unlikely, with perturbed rows far below and above (both clamps reached)
    logp = np.log(rng.uniform(1e-6, 1.0, size=n))
    draws, views = int(rng.integers(1, 4)), int(rng.integers(0, 4))
    logq = logp - rng.normal(0.0, 8.0, size=(draws, n))
    logv = logp - np.abs(rng.normal(0.0, 15.0, size=(views, n)))
    _close(probe.answer_stats(logp, masks_n), probe.answer_stats(as_t(logp), masks_t))
    _close(
        stability.stability_features(logp, logv, masks_n.vision, masks_n.answer),
        stability.stability_features(as_t(logp), as_t(logv), masks_t.vision, masks_t.answer),
    )
    if not masks_n.vision.any():
        return
    normalization = NORMALIZATIONS[seed % 2]
    drop = None if seed % 3 == 0 else float(rng.uniform(0.0, 2.0))
    got = probe.visual_probe(logp, logq, masks_n.vision, normalization, stability_drop=drop)
    want = probe.visual_probe(as_t(logp), as_t(logq), masks_t.vision, normalization, stability_drop=drop)
    assert got.visual == pytest.approx(want.visual, abs=TOL)
    assert got.sources == want.sources
    _close(got.features, want.features)


def test_the_signals_agree_elementwise_and_stay_in_their_library() -> None:
    rng = np.random.default_rng(7)
    logp = np.log(rng.uniform(1e-6, 1.0, size=(3, 9)))
    logq = logp - rng.normal(0.0, 12.0, size=(3, 9))
    mask = rng.uniform(size=9) < 0.5
    mask[:2] = [True, False]
    pairs = {
        "sampled_token_kl": (signals.sampled_token_kl(logp, logq), signals.sampled_token_kl(as_t(logp), as_t(logq))),
        "surprisal": (signals.surprisal(logp), signals.surprisal(as_t(logp))),
        "masked_mean": (signals.masked_mean(logp, mask), signals.masked_mean(as_t(logp), as_t(mask))),
        "masked_min": (signals.masked_min(logp, mask), signals.masked_min(as_t(logp), as_t(mask))),
        "visual_score": (
            signals.visual_score(np.exp(logq), -logp, grounding_weight=0.4),
            signals.visual_score(torch.exp(as_t(logq)), -as_t(logp), grounding_weight=0.4),
        ),
        "normalized": (
            signals.normalized_visual_certainty(100 * logp, 0.5, 2.0),
            signals.normalized_visual_certainty(100 * as_t(logp), 0.5, 2.0),
        ),
        "view_falls": (
            stability.view_falls(logp[0], logq, mask),
            stability.view_falls(as_t(logp[0]), as_t(logq), as_t(mask)),
        ),
    }
    for name, (on_numpy, on_torch) in pairs.items():
        assert isinstance(on_numpy, np.ndarray), name
        assert isinstance(on_torch, torch.Tensor), name
        assert on_numpy.dtype == np.float64, name
        assert on_torch.dtype == torch.float64, name
        np.testing.assert_allclose(on_numpy, on_torch.numpy(), rtol=TOL, atol=TOL, err_msg=name)


def test_empty_spans_give_nan_and_no_features_without_a_warning() -> None:
    # pytest turns warnings into errors: NumPy's "invalid value encountered in divide" would fail here
    empty = np.zeros(5, dtype=np.bool_)
    values = np.arange(10.0).reshape(2, 5)
    assert np.isnan(signals.masked_mean(values, empty)).all()
    assert np.isnan(signals.masked_min(values, empty)).all()
    assert probe.span_stats("reasoning", np.log(np.full(5, 0.5)), empty) == {}
    assert stability.stability_features(np.zeros(5), np.zeros((2, 5)), empty, empty) == {"stability_views": 2.0}
    assert stability.stability_features(np.zeros(5), np.zeros((0, 5)), ~empty, ~empty) == {"stability_views": 0.0}


def test_values_outside_the_mask_do_not_count() -> None:
    values = np.array([[math.inf, 1.0, 3.0, math.nan]])
    mask = np.array([False, True, True, False])
    assert signals.masked_mean(values, mask).tolist() == [2.0]
    assert signals.masked_min(values, mask).tolist() == [1.0]
    assert signals.masked_mean(torch.from_numpy(values), torch.from_numpy(mask)).tolist() == [2.0]


def test_inputs_are_not_modified() -> None:
    logp, logq = np.log(np.full(6, 0.8)), np.log(np.full((2, 6), 0.2))
    vision = np.array([False, True, True, False, False, False])
    kept = (logp.copy(), logq.copy(), vision.copy())
    probe.visual_probe(logp, logq, vision, NORMALIZATIONS[0])
    stability.stability_features(logp, logq, vision, vision)
    for before, after in zip(kept, (logp, logq, vision), strict=True):
        assert np.array_equal(before, after)


def test_gradients_flow_through_the_torch_path() -> None:
    """The training targets (``training/tar.py``) differentiate through the same functions."""
    logp = torch.log(torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64)).requires_grad_()
    logq = torch.log(torch.tensor([[0.5, 0.5, 0.2]], dtype=torch.float64))
    vision = torch.tensor([True, True, False])
    kl = signals.masked_mean(signals.sampled_token_kl(logp, logq), vision)
    h = signals.masked_mean(signals.surprisal(logp), vision)
    (grad,) = torch.autograd.grad(signals.visual_score(kl, h).sum(), logp)
    assert grad[2] == 0.0  # outside the span
    assert bool(torch.isfinite(grad).all())
    assert bool((grad[:2] != 0).all())


def test_a_grounding_weight_outside_the_unit_interval_is_refused() -> None:
    normalization = VisualNormalization.model_construct(mean=0.0, std=1.0, grounding_weight=1.5, stability_weight=0.0)
    with pytest.raises(ValueError, match=r"`grounding_weight` must be in \[0, 1\], got 1.5"):
        probe.visual_probe(np.zeros(2), np.zeros((1, 2)), np.ones(2, dtype=np.bool_), normalization)
    assert math.isfinite(
        probe.visual_probe(np.zeros(2), -np.ones((1, 2)), np.ones(2, dtype=np.bool_), NORMALIZATIONS[0]).visual
    )
