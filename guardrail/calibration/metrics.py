"""Calibration and selective-prediction metrics (METHOD.md section 6), as pure functions over arrays.

Every metric takes ``confidence`` (c, the predicted P(correct), in [0, 1]) and ``correct`` (y in {0, 1}) as 1-D
arrays of one length n >= 1, and is cut into named private stages like torchmetrics' functional metrics:
``_check_*`` validates (raising :class:`guardrail.CalibrationError` that names the parameter, the value and the
expectation), ``_*_compute`` does the arithmetic on validated float arrays. Inputs are never modified.

Uncertainty about these numbers (noise floor, bootstrap) and the all-in-one summary live in
:mod:`guardrail.calibration.summary`.

Binning (ECE, MCE, reliability diagrams): ``n_bins`` equal-width bins, right-closed ``(k/B, (k+1)/B]``, the
first bin closed ``[0, 1/B]`` (Guo et al. 2017's convention). Edges are the doubles nearest ``k/B``, so a confidence
quantized to a 0.1 grid falls in the bin whose right edge it equals (0.3 is in (0.2, 0.3] at B = 10). Only
non-empty bins count. torchmetrics (``binary_calibration_error``) and netcal bin left-closed ``[k/B, (k+1)/B)``
(1.0 in the last bin) instead: the two agree except for confidences that sit exactly on an edge, which is common
after isotonic calibration or a verbalized 0-10 score (by up to 0.05 ECE on such data). ``edges="left"`` gives
their convention, so figures can be compared with theirs.

Ties (ranking metrics): AURC, E-AURC, the risk-coverage curve and selective accuracy treat answers of equal
confidence as one group whose errors are spread evenly over its positions: the expectation over every order of the
tied answers, so the figure never depends on the input order (isotonic calibration maps thousands of scores to a
few dozen values; a stable sort would let the data's order decide). Adaptive ECE breaks ties by the label, which
is order-free too.

>>> expected_calibration_error([0.2, 0.4, 0.9], [0, 1, 1], n_bins=10)
0.3
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

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


Edges = Literal["right", "left"]
"""Which end of an equal-width bin is closed: ``right`` (k/B, (k+1)/B] (Guo et al.; the default here), ``left``
[k/B, (k+1)/B) (torchmetrics, netcal)."""


def _bin_index(c: FloatArray, n_bins: int, edges: Edges = "right") -> npt.NDArray[np.intp]:
    """Equal-width bin of each confidence: right-closed (k/B, (k+1)/B] -> k with 0 -> 0, or left-closed
    [k/B, (k+1)/B) -> k with 1 -> B - 1."""
    bounds = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    side: Literal["left", "right"] = "left" if edges == "right" else "right"
    index: npt.NDArray[np.intp] = np.clip(np.searchsorted(bounds, c, side=side) - 1, 0, n_bins - 1)
    return index


def _check_edges(edges: object) -> Edges:
    if edges not in ("right", "left"):
        raise CalibrationError(f"`edges` must be 'right' or 'left' (the closed end of a bin), got {edges!r}")
    return edges


def _bin_stats(
    c: FloatArray, y: FloatArray, n_bins: int, edges: Edges = "right"
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-bin (count, sum of c, sum of y)."""
    index = _bin_index(c, n_bins, edges)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    sum_c: FloatArray = np.bincount(index, weights=c, minlength=n_bins).astype(np.float64)
    sum_y: FloatArray = np.bincount(index, weights=y, minlength=n_bins).astype(np.float64)
    return count, sum_c, sum_y


def _gaps(count: FloatArray, sum_c: FloatArray, sum_y: FloatArray) -> FloatArray:
    """|mean y - mean c| of each non-empty bin (empty bins dropped)."""
    full = count > 0
    gaps: FloatArray = np.abs(sum_y[full] - sum_c[full]) / count[full]
    return gaps


def _ece_compute(c: FloatArray, y: FloatArray, n_bins: int, edges: Edges = "right") -> float:
    _, sum_c, sum_y = _bin_stats(c, y, n_bins, edges)
    # sum_b |B_b|/n * |mean y_b - mean c_b| = sum_b |sum y_b - sum c_b| / n
    return float(np.sum(np.abs(sum_y - sum_c)) / c.shape[0])


def expected_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, *, edges: Edges = "right"
) -> float:
    """ECE_B = sum over non-empty bins of |B_b|/n * |mean y_b - mean c_b| (Guo et al. 2017; METHOD.md 6).

    ``edges="left"`` bins as torchmetrics and netcal do (see the module docstring).
    """
    n_bins = _check_int("n_bins", n_bins, 1)
    c, y = _check_confidence_correct(confidence, correct)
    return _ece_compute(c, y, n_bins, _check_edges(edges))


def maximum_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, *, edges: Edges = "right"
) -> float:
    """MCE_B = the largest |mean y_b - mean c_b| over non-empty equal-width bins."""
    n_bins = _check_int("n_bins", n_bins, 1)
    c, y = _check_confidence_correct(confidence, correct)
    return float(np.max(_gaps(*_bin_stats(c, y, n_bins, _check_edges(edges)))))


def _adaptive_ece_compute(c: FloatArray, y: FloatArray, n_bins: int) -> float:
    order = np.lexsort((y, c))  # by c, ties by the label: the groups do not depend on the input order
    total = 0.0
    for group in np.array_split(order, n_bins):  # sizes differ by at most one; empty when n < B
        if group.size:
            total += abs(float(np.sum(y[group]) - np.sum(c[group])))
    return total / float(c.shape[0])


def adaptive_calibration_error(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> float:
    """Adaptive ECE (Nixon et al. 2019): sort by c (ties by the label), split into ``n_bins`` equal-count groups.

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


def _midranks(values: FloatArray) -> FloatArray:
    """1-based ranks of ``values``, ties sharing the mean of their ranks (``scipy.stats.rankdata``'s "average"
    method, on NumPy alone): exact, as every midrank is a multiple of one half."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    ranks: FloatArray = ((ends - counts + 1.0 + ends) / 2.0)[inverse.reshape(-1)]
    return ranks


def _auroc_compute(c: FloatArray, y: FloatArray) -> float:
    n_pos = float(np.sum(y))
    n_neg = float(y.shape[0]) - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "1s (all correct)" if n_neg == 0 else "0s (all wrong)"
        raise CalibrationError(f"AUROC needs both classes in `correct`, got only {only} (n={y.shape[0]})")
    ranks = _midranks(c)  # ties get midranks: a tie between classes counts one half
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


def _descending(c: FloatArray) -> npt.NDArray[np.intp]:
    order: npt.NDArray[np.intp] = np.argsort(-c, kind="stable")
    return order


def _tie_spread_cumsum(values: FloatArray, c_sorted: FloatArray) -> FloatArray:
    """Cumulative sums of ``values`` (in descending-confidence order) with each run of equal confidence spreading
    its total evenly over its positions: the expected cumulative sum over every order of the tied answers."""
    n = c_sorted.shape[0]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(c_sorted) != 0) + 1))
    ends = np.concatenate((starts[1:], [n]))
    cumulative = np.concatenate(([0.0], np.cumsum(values)))
    before, total, size = cumulative[starts], cumulative[ends] - cumulative[starts], (ends - starts).astype(float)
    group = np.repeat(np.arange(starts.shape[0]), ends - starts)
    within = np.arange(1, n + 1, dtype=np.float64) - starts[group]
    spread: FloatArray = before[group] + within * total[group] / size[group]
    return spread


def _risk_coverage_compute(c: FloatArray, y: FloatArray) -> RiskCoverage:
    order = _descending(c)
    k = np.arange(1, c.shape[0] + 1, dtype=np.float64)
    risk = _tie_spread_cumsum(1.0 - y[order], c[order]) / k
    return RiskCoverage(coverage=k / c.shape[0], risk=risk, threshold=c[order])


def risk_coverage_curve(confidence: ArrayLike, correct: ArrayLike) -> RiskCoverage:
    """Selective risk at every coverage k/n, answers sorted by c descending (Geifman 2017); ties share their
    errors evenly, so the curve does not depend on the input order."""
    c, y = _check_confidence_correct(confidence, correct)
    return _risk_coverage_compute(c, y)


def _aurc_compute(c: FloatArray, y: FloatArray) -> float:
    return float(np.mean(_risk_coverage_compute(c, y).risk))


def _oracle_aurc(y: FloatArray) -> float:
    """AURC of the order that puts every correct answer first at this n: the best any confidence could do."""
    n = y.shape[0]
    k = np.arange(1, n + 1, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, k - np.sum(y)) / k))


def _closed_form_oracle_aurc(y: FloatArray) -> float:
    """The oracle AURC of Geifman et al. (2019) in closed form, r + (1 - r) ln(1 - r) with r the error rate: the
    large-n limit, the figure published E-AURCs subtract."""
    r = float(1.0 - np.mean(y))
    return r + ((1.0 - r) * math.log(1.0 - r) if r < 1.0 else 0.0)


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve: mean over k of the error rate of the top k (ties spread evenly)."""
    c, y = _check_confidence_correct(confidence, correct)
    return _aurc_compute(c, y)


def eaurc(
    confidence: ArrayLike, correct: ArrayLike, *, oracle: Literal["closed_form", "exact"] = "closed_form"
) -> float:
    """Excess AURC: AURC minus the AURC of the oracle order (Geifman et al. 2019).

    ``oracle="closed_form"`` (the default) subtracts the published r + (1 - r) ln(1 - r), comparable with published
    figures; ``"exact"`` subtracts the best AURC achievable on these n answers, so a perfect ranking scores exactly
    0 (the closed form gives a small positive number at small n, since the finite-sample oracle is above its limit).
    """
    c, y = _check_confidence_correct(confidence, correct)
    if oracle == "closed_form":
        return _aurc_compute(c, y) - _closed_form_oracle_aurc(y)
    if oracle == "exact":
        return _aurc_compute(c, y) - _oracle_aurc(y)
    raise CalibrationError(f"`oracle` must be 'closed_form' or 'exact', got {oracle!r}")


def _selective_accuracy_compute(c: FloatArray, y: FloatArray, coverage: float) -> float:
    n = c.shape[0]
    k = max(1, math.ceil(coverage * n - 1e-9))  # 1e-9: 0.9 * 10 must be 9, not 10
    order = _descending(c)
    return float(_tie_spread_cumsum(y[order], c[order])[k - 1] / k)


def selective_accuracy(confidence: ArrayLike, correct: ArrayLike, coverage: float) -> float:
    """Accuracy of the ceil(coverage * n) most confident answers; a tie at the cut counts its accuracy pro rata."""
    if isinstance(coverage, bool) or not isinstance(coverage, int | float) or not 0.0 < coverage <= 1.0:
        raise CalibrationError(f"`coverage` must be a float in (0, 1], got {coverage!r}")
    c, y = _check_confidence_correct(confidence, correct)
    return _selective_accuracy_compute(c, y, float(coverage))
