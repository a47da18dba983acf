"""Calibration and selective-prediction metrics (METHOD.md section 6), as pure functions over arrays.

Every metric takes ``confidence`` (c, the predicted P(correct), in [0, 1]) and ``correct`` (y in {0, 1}) as 1-D
arrays of one length n >= 1, and is cut into named private stages like torchmetrics' functional metrics:
``_check_*`` validates (raising :class:`guardrail.CalibrationError` that names the parameter, the value and the
expectation), ``_*_compute`` does the arithmetic on validated float arrays. Inputs are never modified.

Uncertainty about these numbers (noise floor, bootstrap) and the all-in-one summary live in
:mod:`guardrail.calibration.summary`.

Binning (ECE, MCE, reliability diagrams): ``n_bins`` equal-width bins, right-closed ``(k/B, (k+1)/B]``, the
first bin closed ``[0, 1/B]``. Edges are the doubles nearest ``k/B``, so a confidence quantized to a 0.1 grid
falls in the bin whose right edge it equals (0.3 is in (0.2, 0.3] at B = 10). Only non-empty bins count.

>>> expected_calibration_error([0.2, 0.4, 0.9], [0, 1, 1], n_bins=10)
0.3
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import CalibrationError

__all__ = [
    "ReliabilityDiagram",
    "RiskCoverage",
    "adaptive_calibration_error",
    "aurc",
    "auroc",
    "brier_score",
    "eaurc",
    "expected_calibration_error",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram_data",
    "risk_coverage_curve",
    "selective_accuracy",
]

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

# ---------------------------------------------------------------------------------------------------------------
# Validation stages


def _check_confidence_correct(confidence: ArrayLike, correct: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validated float64 copies of (c, y): 1-D, same length n >= 1, c finite in [0, 1], y in {0, 1}."""
    c = _as_1d("confidence", confidence)
    y = _as_1d("correct", correct)
    if c.shape != y.shape:
        raise CalibrationError(
            f"`confidence` and `correct` must have the same length, got {c.shape[0]} and {y.shape[0]}"
        )
    if not np.all(np.isfinite(c)) or np.any(c < 0.0) or np.any(c > 1.0):
        bad = float(c[~(np.isfinite(c) & (c >= 0.0) & (c <= 1.0))][0])
        raise CalibrationError(f"`confidence` must hold probabilities in [0, 1], got {bad!r}")
    if np.any((y != 0.0) & (y != 1.0)):
        bad = float(y[(y != 0.0) & (y != 1.0)][0])
        raise CalibrationError(f"`correct` must hold 0/1 labels, got {bad!r}")
    return c, y


def _as_1d(name: str, values: ArrayLike) -> FloatArray:
    try:
        array = np.array(values, dtype=np.float64)  # a copy: callers' arrays are never touched
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"`{name}` must be a 1-D array of numbers, got {type(values).__name__}") from exc
    if array.ndim != 1:
        raise CalibrationError(f"`{name}` must be a 1-D array, got shape {array.shape}")
    if array.shape[0] == 0:
        raise CalibrationError(f"`{name}` must not be empty")
    return array


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise CalibrationError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_open_unit(name: str, value: object, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < upper:
        raise CalibrationError(f"`{name}` must be a float in (0, {upper:g}), got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------------------
# Binned calibration errors


def _bin_index(c: FloatArray, n_bins: int) -> npt.NDArray[np.intp]:
    """Right-closed equal-width bin of each confidence: (k/B, (k+1)/B] -> k, and 0 -> 0."""
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    index: npt.NDArray[np.intp] = np.clip(np.searchsorted(edges, c, side="left") - 1, 0, n_bins - 1)
    return index


def _bin_stats(c: FloatArray, y: FloatArray, n_bins: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-bin (count, sum of c, sum of y)."""
    index = _bin_index(c, n_bins)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    sum_c: FloatArray = np.bincount(index, weights=c, minlength=n_bins).astype(np.float64)
    sum_y: FloatArray = np.bincount(index, weights=y, minlength=n_bins).astype(np.float64)
    return count, sum_c, sum_y


def _gaps(count: FloatArray, sum_c: FloatArray, sum_y: FloatArray) -> FloatArray:
    """|mean y - mean c| of each non-empty bin (empty bins dropped)."""
    full = count > 0
    gaps: FloatArray = np.abs(sum_y[full] - sum_c[full]) / count[full]
    return gaps


def _ece_compute(c: FloatArray, y: FloatArray, n_bins: int) -> float:
    _, sum_c, sum_y = _bin_stats(c, y, n_bins)
    # sum_b |B_b|/n * |mean y_b - mean c_b| = sum_b |sum y_b - sum c_b| / n
    return float(np.sum(np.abs(sum_y - sum_c)) / c.shape[0])


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> float:
    """ECE_B = sum over non-empty bins of |B_b|/n * |mean y_b - mean c_b| (Guo et al. 2017; METHOD.md 6)."""
    n_bins = _check_int("n_bins", n_bins, 1)
    c, y = _check_confidence_correct(confidence, correct)
    return _ece_compute(c, y, n_bins)


def maximum_calibration_error(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> float:
    """MCE_B = the largest |mean y_b - mean c_b| over non-empty equal-width bins."""
    n_bins = _check_int("n_bins", n_bins, 1)
    c, y = _check_confidence_correct(confidence, correct)
    return float(np.max(_gaps(*_bin_stats(c, y, n_bins))))


def _adaptive_ece_compute(c: FloatArray, y: FloatArray, n_bins: int) -> float:
    order = np.argsort(c, kind="stable")
    total = 0.0
    for group in np.array_split(order, n_bins):  # sizes differ by at most one; empty when n < B
        if group.size:
            total += abs(float(np.sum(y[group]) - np.sum(c[group])))
    return total / float(c.shape[0])


def adaptive_calibration_error(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> float:
    """Adaptive ECE (Nixon et al. 2019): sort by c (stable), split into ``n_bins`` equal-count groups.

    Groups differ in size by at most one (``numpy.array_split``); with n < ``n_bins`` only n groups exist.
    """
    n_bins = _check_int("n_bins", n_bins, 1)
    c, y = _check_confidence_correct(confidence, correct)
    return _adaptive_ece_compute(c, y, n_bins)


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin data of a reliability diagram; ``mean_confidence``/``accuracy`` are NaN for empty bins."""

    edges: FloatArray
    counts: npt.NDArray[np.int64]
    mean_confidence: FloatArray
    accuracy: FloatArray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready lists (NaN -> None)."""

        def clean(a: FloatArray) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in a]

        return {
            "edges": [float(v) for v in self.edges],
            "counts": [int(v) for v in self.counts],
            "mean_confidence": clean(self.mean_confidence),
            "accuracy": clean(self.accuracy),
        }


def reliability_diagram_data(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 10) -> ReliabilityDiagram:
    """Counts, mean confidence and accuracy of each equal-width right-closed bin (for plots)."""
    n_bins = _check_int("n_bins", n_bins, 1)
    c, y = _check_confidence_correct(confidence, correct)
    count, sum_c, sum_y = _bin_stats(c, y, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.where(count > 0, sum_c / np.maximum(count, 1), np.nan)
        mean_y = np.where(count > 0, sum_y / np.maximum(count, 1), np.nan)
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    return ReliabilityDiagram(edges, count.astype(np.int64), mean_c, mean_y)


# ---------------------------------------------------------------------------------------------------------------
# Proper scores and ranking


def brier_score(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Mean squared error (c - y)^2 (Brier 1950)."""
    c, y = _check_confidence_correct(confidence, correct)
    return float(np.mean((c - y) ** 2))


def negative_log_likelihood(confidence: ArrayLike, correct: ArrayLike, eps: float = 1e-7) -> float:
    """Mean -[y log c + (1 - y) log(1 - c)] with c clipped to [eps, 1 - eps] (eps in (0, 0.5))."""
    eps = _check_open_unit("eps", eps, 0.5)
    c, y = _check_confidence_correct(confidence, correct)
    p = np.clip(c, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _auroc_compute(c: FloatArray, y: FloatArray) -> float:
    from scipy.stats import rankdata

    n_pos = float(np.sum(y))
    n_neg = float(y.shape[0]) - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "1s (all correct)" if n_neg == 0 else "0s (all wrong)"
        raise CalibrationError(f"AUROC needs both classes in `correct`, got only {only} (n={y.shape[0]})")
    ranks = rankdata(c, method="average")  # ties get midranks: a tie between classes counts one half
    return float((np.sum(ranks[y == 1.0]) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the ROC curve of c for separating correct from wrong answers (Mann-Whitney U / n1 n0).

    Ties are counted one half (midranks). Single-class ``correct`` has no ROC curve: CalibrationError.
    """
    c, y = _check_confidence_correct(confidence, correct)
    return _auroc_compute(c, y)


@dataclass(frozen=True)
class RiskCoverage:
    """The risk-coverage curve: accepting the top k answers by confidence, for k = 1..n."""

    coverage: FloatArray
    """k / n."""
    risk: FloatArray
    """Error rate among the top k."""
    threshold: FloatArray
    """The k-th largest confidence (accept iff c >= threshold, up to ties)."""


def _risk_coverage_compute(c: FloatArray, y: FloatArray) -> RiskCoverage:
    order = np.argsort(-c, kind="stable")  # descending; ties keep input order
    k = np.arange(1, c.shape[0] + 1, dtype=np.float64)
    risk = np.cumsum(1.0 - y[order]) / k
    return RiskCoverage(coverage=k / c.shape[0], risk=risk, threshold=c[order])


def risk_coverage_curve(confidence: ArrayLike, correct: ArrayLike) -> RiskCoverage:
    """Selective risk at every coverage k/n, sorting by c descending with a stable sort (Geifman 2017)."""
    c, y = _check_confidence_correct(confidence, correct)
    return _risk_coverage_compute(c, y)


def _aurc_compute(c: FloatArray, y: FloatArray) -> float:
    return float(np.mean(_risk_coverage_compute(c, y).risk))


def _oracle_aurc(y: FloatArray) -> float:
    """AURC of the order that puts every correct answer first: the best any confidence could do."""
    n = y.shape[0]
    k = np.arange(1, n + 1, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, k - np.sum(y)) / k))


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve: mean over k of the error rate of the top k."""
    c, y = _check_confidence_correct(confidence, correct)
    return _aurc_compute(c, y)


def eaurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Excess AURC: AURC minus the AURC of the oracle order (Geifman et al. 2019); 0 is a perfect ranking."""
    c, y = _check_confidence_correct(confidence, correct)
    return _aurc_compute(c, y) - _oracle_aurc(y)


def _selective_accuracy_compute(c: FloatArray, y: FloatArray, coverage: float) -> float:
    n = c.shape[0]
    k = max(1, math.ceil(coverage * n - 1e-9))  # 1e-9: 0.9 * 10 must be 9, not 10
    order = np.argsort(-c, kind="stable")
    return float(np.mean(y[order[:k]]))


def selective_accuracy(confidence: ArrayLike, correct: ArrayLike, coverage: float) -> float:
    """Accuracy of the ceil(coverage * n) most confident answers (stable sort by c descending)."""
    if isinstance(coverage, bool) or not isinstance(coverage, int | float) or not 0.0 < coverage <= 1.0:
        raise CalibrationError(f"`coverage` must be a float in (0, 1], got {coverage!r}")
    c, y = _check_confidence_correct(confidence, correct)
    return _selective_accuracy_compute(c, y, float(coverage))
