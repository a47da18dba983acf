"""How far to trust a metric, and every metric at once (METHOD.md section 6).

- :func:`ece_noise_floor`: the ECE a *perfectly calibrated* predictor shows at this n, because y is a coin flip;
  a measured ECE inside its interval cannot be told apart from sampling noise.
- :func:`bootstrap_ci`: a percentile bootstrap interval of any metric.
- :func:`calibration_summary`: every section-6 metric of one component as a JSON-ready pydantic model.

They reuse the validation and compute stages of :mod:`guardrail.calibration.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import CalibrationError
from .metrics import (
    ArrayLike,
    FloatArray,
    _adaptive_ece_compute,
    _as_1d,
    _aurc_compute,
    _auroc_compute,
    _bin_index,
    _bin_stats,
    _check_confidence_correct,
    _check_int,
    _check_open_unit,
    _closed_form_oracle_aurc,
    _ece_compute,
    _gaps,
    _oracle_aurc,
    _selective_accuracy_compute,
    brier_score,
    negative_log_likelihood,
)

__all__ = ["BootstrapCI", "CalibrationSummary", "NoiseFloor", "bootstrap_ci", "calibration_summary", "ece_noise_floor"]


@dataclass(frozen=True)
class NoiseFloor:
    """ECE of a perfectly calibrated predictor at this n: its mean and a central percentile interval."""

    mean: float
    low: float
    high: float
    n_draws: int
    level: float


def ece_noise_floor(
    confidence: ArrayLike, n_bins: int = 15, n_draws: int = 1000, seed: int = 0, level: float = 0.95
) -> NoiseFloor:
    """The ECE a perfectly calibrated predictor shows at this n, by redrawing y ~ Bernoulli(c).

    A measured ECE inside [low, high] cannot be told apart from sampling noise. Vectorised over draws (chunks of
    about two million cells keep memory small).
    """
    n_bins = _check_int("n_bins", n_bins, 1)
    n_draws = _check_int("n_draws", n_draws, 1)
    level = _check_open_unit("level", level)
    c = _as_1d("confidence", confidence)
    c, _ = _check_confidence_correct(c, np.zeros_like(c))
    rng = np.random.default_rng(seed)
    index = _bin_index(c, n_bins)
    sum_c = np.bincount(index, weights=c, minlength=n_bins)
    n = c.shape[0]
    chunk = max(1, 2_000_000 // n)
    eces = []
    for start in range(0, n_draws, chunk):
        rows = min(chunk, n_draws - start)
        y = (rng.random((rows, n)) < c).astype(np.float64)
        flat = (index[None, :] + n_bins * np.arange(rows)[:, None]).ravel()
        sum_y = np.bincount(flat, weights=y.ravel(), minlength=rows * n_bins).reshape(rows, n_bins)
        eces.append(np.sum(np.abs(sum_y - sum_c[None, :]), axis=1) / n)
    values = np.concatenate(eces)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return NoiseFloor(float(np.mean(values)), float(low), float(high), n_draws, level)


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap interval: the metric on the data, and the (alpha/2, 1 - alpha/2) percentiles."""

    estimate: float
    low: float
    high: float
    n_boot: int
    alpha: float
    n_failed: int
    """Resamples on which the metric was undefined (e.g. AUROC on one class), left out of the percentiles."""


def bootstrap_ci(
    metric: Callable[[FloatArray, FloatArray], float],
    confidence: ArrayLike,
    correct: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap confidence interval of ``metric(confidence, correct)`` (Efron & Tibshirani 1993).

    Resamples n pairs with replacement ``n_boot`` times. A resample where the metric raises CalibrationError
    (undefined there) is counted in ``n_failed``; if every resample fails, the error is raised.
    """
    n_boot = _check_int("n_boot", n_boot, 1)
    alpha = _check_open_unit("alpha", alpha)
    c, y = _check_confidence_correct(confidence, correct)
    estimate = float(metric(c, y))
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, c.shape[0], size=(n_boot, c.shape[0]))
    values: list[float] = []
    last_error: CalibrationError | None = None
    for row in indices:
        try:
            values.append(float(metric(c[row], y[row])))
        except CalibrationError as exc:
            last_error = exc
    if not values:
        assert last_error is not None
        raise last_error
    low, high = np.percentile(values, [50.0 * alpha, 100.0 - 50.0 * alpha])
    return BootstrapCI(estimate, float(low), float(high), n_boot, alpha, n_boot - len(values))


# ---------------------------------------------------------------------------------------------------------------
# Everything at once


class CalibrationSummary(BaseModel):
    """Every section-6 metric of one component on one data set (JSON-ready; ``auroc`` None on one class)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int
    accuracy: float
    mean_confidence: float
    ece_10: float
    ece_15: float
    adaptive_ece_15: float
    mce_15: float
    brier: float
    nll: float
    nll_eps: float
    auroc: float | None
    aurc: float
    eaurc: float
    """E-AURC against the published closed-form oracle r + (1 - r) ln(1 - r)."""
    eaurc_exact: float | None = None
    """E-AURC against the exact finite-sample oracle (0 for a perfect ranking); None in artifacts before it existed."""
    selective_accuracy_50: float
    selective_accuracy_80: float
    selective_accuracy_90: float
    ece_10_noise_floor_mean: float
    ece_10_noise_floor_high: float
    ece_15_noise_floor_mean: float
    ece_15_noise_floor_high: float
    ece_10_ci: tuple[float, float] | None = None
    """95 % percentile-bootstrap interval of ECE10 (``n_boot`` resamples), None when not asked for."""
    auroc_ci: tuple[float, float] | None = None
    """95 % percentile-bootstrap interval of AUROC, None when not asked for or undefined."""
    n_boot: int = 0


def calibration_summary(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    eps: float = 1e-7,
    noise_draws: int = 500,
    n_boot: int = 0,
    seed: int = 0,
) -> CalibrationSummary:
    """All metrics of METHOD.md section 6 for one (confidence, correct) set; noise floors at the 95 % level.

    With ``n_boot`` > 0 it adds 95 % bootstrap intervals of ECE10 and AUROC.
    """
    n_boot = _check_int("n_boot", n_boot, 0)
    c, y = _check_confidence_correct(confidence, correct)
    try:
        area: float | None = _auroc_compute(c, y)
    except CalibrationError:
        area = None
    floor10 = ece_noise_floor(c, n_bins=10, n_draws=noise_draws, seed=seed)
    floor15 = ece_noise_floor(c, n_bins=15, n_draws=noise_draws, seed=seed)
    values: dict[str, Any] = {
        "n": int(c.shape[0]),
        "accuracy": float(np.mean(y)),
        "mean_confidence": float(np.mean(c)),
        "ece_10": _ece_compute(c, y, 10),
        "ece_15": _ece_compute(c, y, 15),
        "adaptive_ece_15": _adaptive_ece_compute(c, y, 15),
        "mce_15": float(np.max(_gaps(*_bin_stats(c, y, 15)))),
        "brier": brier_score(c, y),
        "nll": negative_log_likelihood(c, y, eps),
        "nll_eps": eps,
        "auroc": area,
        "aurc": _aurc_compute(c, y),
        "eaurc": _aurc_compute(c, y) - _closed_form_oracle_aurc(y),
        "eaurc_exact": _aurc_compute(c, y) - _oracle_aurc(y),
        "selective_accuracy_50": _selective_accuracy_compute(c, y, 0.5),
        "selective_accuracy_80": _selective_accuracy_compute(c, y, 0.8),
        "selective_accuracy_90": _selective_accuracy_compute(c, y, 0.9),
        "ece_10_noise_floor_mean": floor10.mean,
        "ece_10_noise_floor_high": floor10.high,
        "ece_15_noise_floor_mean": floor15.mean,
        "ece_15_noise_floor_high": floor15.high,
        "n_boot": n_boot,
    }
    if n_boot:
        ece = bootstrap_ci(lambda a, b: _ece_compute(a, b, 10), c, y, n_boot=n_boot, seed=seed)
        values["ece_10_ci"] = (ece.low, ece.high)
        if area is not None:
            ranking = bootstrap_ci(_auroc_compute, c, y, n_boot=n_boot, seed=seed)
            values["auroc_ci"] = (ranking.low, ranking.high)
    return CalibrationSummary(**values)
