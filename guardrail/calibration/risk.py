"""Certified thresholds: accept an answer only when the error among accepted answers is provably small.

METHOD.md section 7. Given a labelled calibration set drawn like deployment data, a *certified* threshold t
guarantees ``P(selective risk of "accept iff c >= t" > alpha) <= delta``, where the selective risk is the error
rate among accepted answers.

- :func:`certify_threshold` is SGR, Algorithm 1 of Geifman & El-Yaniv (2017), "Selective Classification for Deep
  Neural Networks" (NeurIPS): a binary search over the sorted calibration confidences for the lowest threshold
  whose binomial-tail (Clopper-Pearson) upper bound on the risk is <= alpha. The search takes
  k = ceil(log2 m) steps and each bound is taken at level delta / k, so by the union bound every bound the
  search computed holds at once with probability >= 1 - delta; returning any tested threshold whose bound is
  <= alpha is therefore safe. We return the one with the largest coverage.
- :func:`certify_threshold_ltt` is Learn-then-Test (Angelopoulos et al. 2021) with Bonferroni over a fixed grid
  of thresholds (:data:`LTT_GRID`): binomial p-values, each tested at delta / len(grid).
- :func:`certify_pair` certifies the joint rule "accept iff visual >= t_v and reasoning >= t_r" over a fixed grid
  of (t_v, t_r) pairs, each bound at level delta / (number of pairs) (Bonferroni), and keeps the feasible pair
  with the largest coverage.

Feasibility comes first: if the base error mu (all answers accepted) exceeds alpha, every rule with risk <= alpha
must abstain on at least (mu - alpha) / (1 - alpha) of inputs (accepting a fraction a of inputs with error at
least mu - (1 - a) gives risk >= (mu - 1 + a) / a). ``min_abstention`` reports this on the calibration set. When
no tested rule is certified, the result says so (``feasible=False``, no threshold): never a fake threshold.

A confidence that is NaN (unknown) is never accepted: such answers count in n and against coverage.

Measured (``bench/calibration_synthetic.py``: c ~ U(0, 1), P(correct | c) = c, delta = 0.1, 1,000 runs each):
the certified threshold's true risk exceeded alpha in 0.4 % (alpha 0.1, n 500), 1.2 % (0.2, 500), 0.5 % (0.1,
2,000) and 0.4 % (0.05, 5,000) of runs; the naive empirical threshold in 52-56 %. The price is power: SGR's
binary search moves to higher thresholds (fewer accepted answers, looser bounds) whenever a bound fails, so
small sets are often declared infeasible (90 % of runs at alpha 0.1, n 500; 13 % at alpha 0.2, n 500).
Learn-then-Test on the default grid is as safe (0 to 0.1 % violations) with similar power (infeasible in 93 %,
15 %, 20 % and 60 % of runs at the same four settings, against SGR's 90 %, 13 %, 26 % and 68 %).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from .._extras import require
from ..errors import CalibrationError
from .metrics import _as_1d

__all__ = [
    "DEFAULT_GRID",
    "LTT_GRID",
    "CertifiedThreshold",
    "binomial_upper_bound",
    "certify_pair",
    "certify_threshold",
    "certify_threshold_ltt",
]

FloatArray = npt.NDArray[np.float64]
DEFAULT_GRID: tuple[float, ...] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)
"""The default per-component thresholds of :func:`certify_pair` (12 values, 144 pairs; 0 = no condition)."""
LTT_GRID: tuple[float, ...] = (
    *(k / 20 for k in range(10, 18)),  # 0.5 .. 0.85 by 0.05
    *(k / 100 for k in range(86, 100)),  # 0.86 .. 0.99 by 0.01
    0.995,
)
"""The default thresholds of :func:`certify_threshold_ltt` (23 values, finer where high-accuracy rules live)."""


class CertifiedThreshold(BaseModel):
    """A certified acceptance rule, or the statement that none could be certified.

    ``thresholds`` maps each component to its threshold (accept iff every component >= its threshold); it is
    ``None`` when ``feasible`` is false. ``threshold`` is the single threshold of a one-component rule.
    ``coverage``, ``empirical_risk`` and ``risk_bound`` describe the chosen rule on the calibration set (for an
    infeasible result: the tested rule with the lowest bound, and coverage 0 since nothing is accepted).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    component: str
    threshold: float | None
    thresholds: dict[str, float] | None
    alpha: float
    delta: float
    coverage: float
    empirical_risk: float | None
    risk_bound: float | None
    n: int
    feasible: bool
    base_error: float
    min_abstention: float
    method: str
    n_tests: int
    """How many bounds delta was split over (each taken at level delta / n_tests)."""
    reason: str

    def accepts(self, confidence: Mapping[str, float | None]) -> bool:
        """Whether the rule accepts an answer with these component values (unknown or infeasible: never)."""
        if not self.feasible or self.thresholds is None:
            return False
        for name, t in self.thresholds.items():
            value = confidence.get(name)
            if value is None or not value >= t:
                return False
        return True


def _scipy_stats() -> Any:
    """``scipy.stats``: certifying a threshold is calibration-time work (the ``calibrate`` extra)."""
    return require("scipy.stats", extra="calibrate", feature="certifying a threshold")


def binomial_upper_bound(errors: int, n: int, delta: float) -> float:
    """The one-sided (1 - delta) Clopper-Pearson upper bound on an error rate seen as ``errors`` out of ``n``.

    Solves sum_{j <= errors} C(n, j) b^j (1 - b)^(n - j) = delta for b (the binomial tail inversion of SGR);
    1.0 when n = 0 or every one is an error.
    """
    beta = _scipy_stats().beta
    if n <= 0 or errors >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, errors + 1, n - errors))


def _upper_bounds(errors: npt.NDArray[np.int64], n: npt.NDArray[np.int64], delta: float) -> FloatArray:
    """:func:`binomial_upper_bound` element-wise."""
    beta = _scipy_stats().beta
    out = np.ones(errors.shape, dtype=np.float64)
    some = (n > 0) & (errors < n)
    out[some] = beta.ppf(1.0 - delta, errors[some] + 1, n[some] - errors[some])
    return out


def _check_unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise CalibrationError(f"`{name}` must be a float in (0, 1), got {value!r}")
    return float(value)


def _check_scores_labels(name: str, scores: npt.ArrayLike, correct: FloatArray) -> FloatArray:
    s = _as_1d(name, scores)
    if s.shape != correct.shape:
        raise CalibrationError(f"`{name}` must have the length of `correct` ({correct.shape[0]}), got {s.shape[0]}")
    known = s[~np.isnan(s)]
    if np.any((known < 0.0) | (known > 1.0)):
        bad = float(known[(known < 0.0) | (known > 1.0)][0])
        raise CalibrationError(f"`{name}` must hold values in [0, 1] or NaN (unknown), got {bad!r}")
    return s


def _check_correct(correct: npt.ArrayLike) -> FloatArray:
    y = _as_1d("correct", correct)
    if np.any((y != 0.0) & (y != 1.0)):
        raise CalibrationError(f"`correct` must hold 0/1 labels, got {float(y[(y != 0.0) & (y != 1.0)][0])!r}")
    return y


def _feasibility(y: FloatArray, alpha: float) -> tuple[float, float]:
    mu = float(np.mean(1.0 - y))
    return mu, max(0.0, (mu - alpha) / (1.0 - alpha))


def _result(**fields: Any) -> CertifiedThreshold:
    if fields["feasible"]:
        fields["reason"] = (
            f"error among accepted <= {fields['alpha']:g} with probability >= {1 - fields['delta']:g}"
            f" (bound {fields['risk_bound']:.4f}, {fields['n_tests']} bounds at delta/{fields['n_tests']})"
        )
    else:
        fields.update(threshold=None, thresholds=None, coverage=0.0)
        reason = f"no tested rule certifies error <= {fields['alpha']:g} at delta={fields['delta']:g} (n={fields['n']})"
        if fields["min_abstention"] > 0:
            reason += (
                f"; the base error {fields['base_error']:.3f} exceeds alpha, so any valid rule must abstain on at"
                f" least {fields['min_abstention']:.1%} of inputs"
            )
        fields["reason"] = reason + ": abstain"
    return CertifiedThreshold(**fields)


def certify_threshold(
    confidence: npt.ArrayLike,
    correct: npt.ArrayLike,
    *,
    alpha: float,
    delta: float,
    component: str = "overall",
) -> CertifiedThreshold:
    """SGR (Geifman & El-Yaniv 2017, Algorithm 1): the lowest certified threshold on one component.

    ``confidence`` holds the component's calibrated values (NaN = unknown, never accepted), ``correct`` the labels
    of what the component predicts. Returns the rule "accept iff confidence >= threshold".
    """
    alpha, delta = _check_unit("alpha", alpha), _check_unit("delta", delta)
    y = _check_correct(correct)
    c = _check_scores_labels("confidence", confidence, y)
    n = y.shape[0]
    base_error, min_abstention = _feasibility(y, alpha)
    known = ~np.isnan(c)
    order = np.argsort(c[known], kind="stable")
    cs, errs = c[known][order], 1.0 - y[known][order]
    m = cs.shape[0]
    suffix = np.concatenate([np.cumsum(errs[::-1])[::-1], [0.0]])  # suffix[i] = errors among cs[i:]
    steps = max(1, math.ceil(math.log2(m))) if m > 1 else 1
    level = delta / steps

    def evaluate(z: int) -> tuple[float, int, int, float]:
        start = int(np.searchsorted(cs, cs[z], side="left"))  # ties with cs[z] are accepted too
        accepted, errors = m - start, round(suffix[start])
        return float(cs[z]), accepted, errors, binomial_upper_bound(errors, accepted, level)

    fields: dict[str, Any] = {
        "component": component,
        "alpha": alpha,
        "delta": delta,
        "n": n,
        "base_error": base_error,
        "min_abstention": min_abstention,
        "method": "sgr",
        "n_tests": steps,
    }
    if m == 0:
        return _result(**fields, feasible=False, empirical_risk=None, risk_bound=None)
    best: tuple[float, int, int, float] | None = None
    lowest: tuple[float, int, int, float] | None = None
    lo, hi = 0, m - 1
    for _ in range(steps):
        z = math.ceil((lo + hi) / 2)
        tested = evaluate(z)
        if lowest is None or tested[3] < lowest[3]:
            lowest = tested
        if tested[3] <= alpha:
            if best is None or tested[1] > best[1]:
                best = tested
            hi = z
        else:
            lo = z
    chosen = best if best is not None else lowest
    assert chosen is not None
    t, accepted, errors, bound = chosen
    return _result(
        **fields,
        feasible=best is not None,
        threshold=t,
        thresholds={component: t},
        coverage=accepted / n,
        empirical_risk=errors / accepted if accepted else None,
        risk_bound=bound,
    )


def certify_threshold_ltt(
    confidence: npt.ArrayLike,
    correct: npt.ArrayLike,
    *,
    alpha: float,
    delta: float,
    component: str = "overall",
    grid: Sequence[float] = LTT_GRID,
) -> CertifiedThreshold:
    """Learn-then-Test (Angelopoulos et al. 2021) with Bonferroni over a fixed grid of thresholds.

    For each threshold t in ``grid`` (fixed before seeing the data) the null "risk(t) > alpha" has the binomial
    p-value P(Bin(accepted, alpha) <= errors); thresholds with p <= delta / len(grid) are certified together
    with probability >= 1 - delta, and the one with the largest coverage is returned. Unlike SGR's binary search
    it never walks away from a feasible region after one failed bound, at the price of a fixed grid.
    """
    binom = _scipy_stats().binom
    alpha, delta = _check_unit("alpha", alpha), _check_unit("delta", delta)
    ts = _check_grid(grid)
    y = _check_correct(correct)
    c = _check_scores_labels("confidence", confidence, y)
    base_error, min_abstention = _feasibility(y, alpha)
    with np.errstate(invalid="ignore"):  # NaN >= t is False: unknown never accepted
        accept = c[None, :] >= ts[:, None]
    accepted = accept.sum(axis=1).astype(np.int64)
    errors = np.rint(accept.astype(np.float64) @ (1.0 - y)).astype(np.int64)
    level = delta / ts.size
    p_values = binom.cdf(errors, accepted, alpha)
    ok = p_values <= level
    i = int(np.argmax(np.where(ok, accepted, -1))) if np.any(ok) else int(np.argmin(p_values))
    a, e = int(accepted[i]), int(errors[i])
    return _result(
        component=component,
        alpha=alpha,
        delta=delta,
        n=int(y.shape[0]),
        base_error=base_error,
        min_abstention=min_abstention,
        method="ltt_bonferroni",
        n_tests=int(ts.size),
        feasible=bool(ok[i]),
        threshold=float(ts[i]),
        thresholds={component: float(ts[i])},
        coverage=a / y.shape[0],
        empirical_risk=e / a if a else None,
        risk_bound=binomial_upper_bound(e, a, level),
    )


def _check_grid(grid: Sequence[float]) -> FloatArray:
    ts = np.array(sorted({float(t) for t in grid}), dtype=np.float64)
    if ts.size == 0 or np.any((ts < 0.0) | (ts > 1.0)):
        raise CalibrationError(f"`grid` must be a non-empty sequence of thresholds in [0, 1], got {list(grid)!r}")
    return ts


def certify_pair(
    visual: npt.ArrayLike,
    reasoning: npt.ArrayLike,
    correct: npt.ArrayLike,
    *,
    alpha: float,
    delta: float,
    grid: Sequence[float] = DEFAULT_GRID,
) -> CertifiedThreshold:
    """The joint rule "accept iff visual >= t_v and reasoning >= t_r" with the largest certified coverage.

    Every (t_v, t_r) in ``grid`` x ``grid`` is tested with a Clopper-Pearson bound at level delta / len(grid)^2
    (Bonferroni: all bounds hold at once with probability >= 1 - delta). ``correct`` is answer correctness.
    The grid must be fixed before seeing the data (default: :data:`DEFAULT_GRID`).
    """
    alpha, delta = _check_unit("alpha", alpha), _check_unit("delta", delta)
    ts = _check_grid(grid)
    y = _check_correct(correct)
    v = _check_scores_labels("visual", visual, y)
    r = _check_scores_labels("reasoning", reasoning, y)
    n = y.shape[0]
    base_error, min_abstention = _feasibility(y, alpha)
    with np.errstate(invalid="ignore"):  # NaN >= t is False: unknown never accepted
        av = (v[None, :] >= ts[:, None]).astype(np.float64)
        ar = (r[None, :] >= ts[:, None]).astype(np.float64)
    accepted = np.rint(av @ ar.T).astype(np.int64)  # [i, j]: accepted by (ts[i], ts[j])
    errors = np.rint(av @ (ar * (1.0 - y)[None, :]).T).astype(np.int64)
    tests = ts.size**2
    level = delta / tests
    bounds = _upper_bounds(errors, accepted, level)
    fields: dict[str, Any] = {
        "component": "visual+reasoning",
        "alpha": alpha,
        "delta": delta,
        "n": n,
        "base_error": base_error,
        "min_abstention": min_abstention,
        "method": "bonferroni_grid",
        "n_tests": tests,
        "threshold": None,
    }
    ok = bounds <= alpha
    if np.any(ok):  # largest coverage, then lowest bound
        score = np.where(ok, accepted.astype(np.float64), -1.0) - bounds * 1e-9
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    else:
        i, j = np.unravel_index(int(np.argmin(bounds)), bounds.shape)
    a, e = int(accepted[i, j]), int(errors[i, j])
    return _result(
        **fields,
        feasible=bool(ok[i, j]),
        thresholds={"visual": float(ts[i]), "reasoning": float(ts[j])},
        coverage=a / n,
        empirical_risk=e / a if a else None,
        risk_bound=float(bounds[i, j]),
    )
