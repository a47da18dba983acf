"""The decoupled calibrator: one fitted map per confidence component (METHOD.md sections 2 and 5).

- **visual** = P(perception correct): the raw visual score calibrated against ``perception_correct``.
- **reasoning** = P(answer correct | perception correct): the raw reasoning score calibrated against
  ``answer_correct`` on the rows whose perception was correct. Where no row has a perception label, it is
  calibrated against ``answer_correct`` on every row and ``reasoning_target_`` says so.
- **overall** = P(answer correct), formed from the *calibrated* parts by the ``combiner``:

  ==============================  =====================================================================
  ``"harmonic"``                  2vr/(v+r), 0 when either is 0: the paper's rule (one weak part sinks the
                                  whole), no fit. Not a probability of the answer: it exceeds v·r, so it
                                  is over-confident whenever both parts are calibrated.
  ``"product"``                   v·r: the chain rule P(perception) P(reasoning | perception), ignoring
                                  lucky answers from wrong perception; no fit.
  ``"platt_harmonic"`` (default)  Platt scaling of the harmonic mean against ``answer_correct``: the paper's
                                  ordering, made a probability.
  ``"isotonic_harmonic"``         isotonic regression of the harmonic mean against ``answer_correct``.
  ``"logistic"``                  sigmoid(a logit v + b logit r + c), a, b >= 0, against ``answer_correct``.
  ==============================  =====================================================================

  The fitted combiners keep the harmonic mean's (or each part's) ordering and make overall a probability.
  Measured (``bench/calibration_synthetic.py``, Platt parts, 2,000 training rows, 50,000 fresh rows, mean of 5
  seeds): overall ECE10 0.153 harmonic, 0.023 product, 0.012 platt_harmonic, 0.022 isotonic_harmonic, 0.014
  logistic; AUROC 0.701 for harmonic and platt_harmonic (a monotone map of it), 0.691 logistic. With isotonic
  parts every combiner is a little worse (platt_harmonic 0.020, logistic 0.019); with 500 training rows
  platt_harmonic still reaches 0.013. Hence the default ``"platt_harmonic"``: overall is read as P(answer correct)
  by policies and certified thresholds, and the raw harmonic mean is not one.

  When visual or reasoning is unknown, overall is the calibrated **holistic** score if one was fitted and
  measured, else unknown: a component is never invented.

**Verbalized scores.** A model trained to say how sure it is (METHOD.md section 8) writes a visual and a reasoning
score (``Signals.features`` ``verbalized_vision`` / ``verbalized_reasoning``, valid 0..10 scores only). Given them
at ``fit`` (``verbalized``), each of visual and reasoning also fits a *blend*, ``sigmoid(a logit p + b logit w +
c)`` with a, b >= 0, of the calibrated measured score p and the verbalized score w, on the same target; where a row
has a measured score but no (or a malformed) verbalized one the measured calibration alone is used, and where it
has only a verbalized score (a backend that cannot re-score) a Platt map of the verbalized score. Without
verbalized scores at fit, nothing changes.

**Shift.** With shift covariates (``SHIFT_COVARIATES``: how far the question and the images lie from the calibration
inputs, ``guardrail.confidence.familiarity``), each component is then discounted by a fitted
:class:`ShiftDiscount`, ``sigmoid(logit p - sum_j b_j x_j)`` with every ``b_j >= 0``: an input without shift keeps
its calibrated confidence exactly, and confidence can only fall as an input moves away from what calibration saw.
The discounts are fitted on the same rows, whose covariates vary with the corruptions and question perturbations
the calibration data holds; a covariate that does not vary there gets ``b_j = 0`` and changes nothing. Rows marked
``discount_only`` (inputs made unfamiliar on purpose) teach the discounts only, never the calibrators.
Overall is combined from the discounted parts and discounted once more on its own target. An input whose
covariates were not measured is not discounted (its familiarity is then unknown too, which policies handle
explicitly).

**Cross-fitting by group.** Given ``groups`` at ``fit`` (for example each row's corruption family), the part
calibrators are also fitted once per group *without* that group's rows, and each row's calibrated parts are those
of the fit that did not see its group: what a kind of input nobody calibrated on would get. The shift discounts learn
from these cross-fitted values, so what an unseen group costs (confidence that runs too high where the shift
covariates or the stability probe say the input is unlike the rest) is learned rather than assumed. The part
calibrators used at ``predict`` are still fitted on every row, and so is the combiner, on those parts: in
distribution (no shift, no discount) overall stays as calibrated as before. Without ``groups`` (or with one group)
every fit is in-sample, as before.

Scores and labels may hold NaN or None meaning "not measured"; such rows are left out of the fits that need them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ..confidence.feature_names import (
    SHIFT_COVARIATES,
    STABILITY,
    STABILITY_DROP,
    VERBALIZED_REASONING,
    VERBALIZED_VISION,
)
from ..errors import CalibrationError
from ..types import Confidence, Signals
from .calibrators import (
    IsotonicCalibrator,
    PlattScaling,
    ScoreCalibrator,
    _logit,
    _scipy_optimize,
    _sigmoid,
    calibrator_from_dict,
    make_calibrator,
)

__all__ = [
    "COMBINERS",
    "SHIFT_COVARIATES",
    "VERBALIZED_FEATURES",
    "DecoupledCalibrator",
    "ShiftDiscount",
    "harmonic_mean_array",
]

FloatArray = npt.NDArray[np.float64]
_D = TypeVar("_D", bound="DecoupledCalibrator")
MaybeArray = npt.ArrayLike | Sequence[float | None]
"""Scores or labels where NaN or None means "not measured"."""
COMBINERS = ("harmonic", "product", "platt_harmonic", "isotonic_harmonic", "logistic")
_PARTS = ("visual", "reasoning", "holistic")
# SHIFT_COVARIATES (re-exported): the ``Signals.features`` a fitted calibrator discounts confidence by (see the module
# docstring), named in ``confidence.feature_names`` beside the estimators that measure them.
_DISCOUNTED = ("visual", "reasoning", "overall")
VERBALIZED_FEATURES = {"visual": VERBALIZED_VISION, "reasoning": VERBALIZED_REASONING}
"""The ``Signals.features`` holding a model's own verbalized scores, by the component they inform."""


def harmonic_mean_array(v: FloatArray, r: FloatArray) -> FloatArray:
    """Element-wise 2vr/(v+r), 0 where either is 0 (NaN where either is NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = np.where((v > 0) & (r > 0), 2.0 * v * r / (v + r), 0.0)
    out[np.isnan(v) | np.isnan(r)] = np.nan
    return out


class _LogisticCombiner:
    """sigmoid(a logit v + b logit r + c) with a, b >= 0 (monotone in each part), fitted by maximum likelihood.

    The parts are clipped to [0.01, 0.99] before the logit: in-sample isotonic parts reach exactly 0 and 1, whose
    logits (about +-14 at 1e-6) would dominate the fit (measured: ECE10 0.064 -> 0.019 with isotonic parts,
    unchanged with Platt parts).
    """

    kind = "logistic"
    eps = 1e-2

    def __init__(self, coef: tuple[float, float] = (1.0, 1.0), intercept: float = 0.0) -> None:
        self.coef = coef
        self.intercept = intercept

    def fit(self, v: FloatArray, r: FloatArray, y: FloatArray) -> _LogisticCombiner:
        minimize = _scipy_optimize("fitting a DecoupledCalibrator").minimize
        x = np.stack([_logit(v, self.eps), _logit(r, self.eps)], axis=1)

        def loss(w: FloatArray) -> tuple[float, FloatArray]:
            a = x @ w[:2] + w[2]
            residual = _sigmoid(a) - y
            grad = np.concatenate([x.T @ residual, [np.sum(residual)]]) / y.shape[0]
            return float(np.mean(np.logaddexp(0.0, a) - y * a)), grad

        bounds = [(0.0, 1e3), (0.0, 1e3), (-50.0, 50.0)]
        w = minimize(loss, np.array([1.0, 1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=bounds).x
        self.coef, self.intercept = (float(w[0]), float(w[1])), float(w[2])
        return self

    def predict(self, v: FloatArray, r: FloatArray) -> FloatArray:
        a = self.coef[0] * _logit(v, self.eps) + self.coef[1] * _logit(r, self.eps) + self.intercept
        return _sigmoid(a)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "coef": list(self.coef), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _LogisticCombiner:
        try:
            a, b = (float(x) for x in data["coef"])
            return cls((a, b), float(data["intercept"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed logistic combiner dict: {dict(data)!r}") from exc


class ShiftDiscount:
    """``sigmoid(logit(p) - sum_j b_j x_j)`` with ``b_j >= 0``: a calibrated confidence lowered by shift.

    ``x_j`` are non-negative shift covariates (0 on typical calibration inputs), so an input without shift keeps
    its calibrated confidence exactly and a shifted one can only lose confidence. The ``b_j`` are fitted by maximum
    likelihood; ``p`` is clipped to ``[eps, 1 - eps]`` before the logit, as in-sample isotonic values reach 0 and 1.
    (``intercept`` is kept for files that carry one; fitting leaves it at 0.)
    """

    eps = 1e-3

    def __init__(self, names: Sequence[str] = (), coef: Sequence[float] = (), intercept: float = 0.0) -> None:
        self.names = tuple(names)
        self.coef = tuple(float(b) for b in coef) or (0.0,) * len(self.names)
        self.intercept = float(intercept)

    def fit(self, p: FloatArray, x: FloatArray, y: FloatArray) -> ShiftDiscount:
        """Fit ``b`` on confidences ``p`` ``(n,)``, covariates ``x`` ``(n, len(names))`` and labels ``y``."""
        minimize = _scipy_optimize("fitting a ShiftDiscount").minimize
        base = _logit(p, self.eps)

        def loss(w: FloatArray) -> tuple[float, FloatArray]:
            a = base - x @ w
            residual = _sigmoid(a) - y
            return float(np.mean(np.logaddexp(0.0, a) - y * a)), -(x.T @ residual) / y.shape[0]

        bounds = [(0.0, 50.0)] * x.shape[1]
        w = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds).x
        self.intercept, self.coef = 0.0, tuple(float(b) for b in w)
        return self

    def predict(self, p: FloatArray, x: FloatArray) -> FloatArray:
        """The discounted confidences (``x`` rows with NaN count as 0: not measured, not discounted)."""
        shift = np.nan_to_num(x, nan=0.0) @ np.asarray(self.coef, dtype=np.float64)
        return _sigmoid(_logit(p, self.eps) + self.intercept - shift)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "shift_discount",
            "names": list(self.names),
            "coef": list(self.coef),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShiftDiscount:
        try:
            names = [str(n) for n in data["names"]]
            coef = [float(b) for b in data["coef"]]
            if len(names) != len(coef) or any(b < 0 or not np.isfinite(b) for b in coef):
                raise ValueError("one finite coefficient >= 0 per covariate")
            return cls(names, coef, float(data["intercept"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed shift discount dict: {dict(data)!r} ({exc})") from exc


def _optional_array(
    name: str, values: MaybeArray | None, n: int | None, *, labels: bool, bounded: bool = True
) -> FloatArray:
    """Float array with NaN for "not measured"; values checked in [0, 1] (scores, if ``bounded``) or {0, 1}."""
    if values is None:
        if n is None:
            raise CalibrationError(f"`{name}` is required")
        return np.full(n, np.nan)
    try:
        array = np.array(values, dtype=np.float64)  # a copy; None -> NaN
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"`{name}` must be a 1-D array of numbers or None") from exc
    if array.ndim != 1 or (n is not None and array.shape[0] != n):
        raise CalibrationError(f"`{name}` must be 1-D of length {n}, got shape {array.shape}")
    known = array[~np.isnan(array)]
    if labels:
        bad = known[(known != 0) & (known != 1)]
    else:
        bad = known[(known < 0) | (known > 1)] if bounded else known[~np.isfinite(known)]
    if bad.size:
        expected = "0/1 labels" if labels else "scores in [0, 1]" if bounded else "finite numbers"
        expected += " (NaN or None = unknown)"
        raise CalibrationError(f"`{name}` must hold {expected}, got {float(bad[0])!r}")
    return array


def labelled_arrays(
    answer_correct: MaybeArray,
    visual_scores: MaybeArray | None,
    reasoning_scores: MaybeArray | None,
    holistic_scores: MaybeArray | None,
    perception_correct: MaybeArray | None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(answer, visual, reasoning, holistic, perception)`` checked, of one length, NaN for "not measured": what
    every fit reads from its labelled rows."""
    y = _optional_array("answer_correct", answer_correct, None, labels=True)
    n = y.shape[0]
    v = _optional_array("visual_scores", visual_scores, n, labels=False)
    r = _optional_array("reasoning_scores", reasoning_scores, n, labels=False)
    h = _optional_array("holistic_scores", holistic_scores, n, labels=False)
    return y, v, r, h, _optional_array("perception_correct", perception_correct, n, labels=True)


class DecoupledCalibrator:
    """Calibrates visual, reasoning and holistic scores separately and forms overall with ``combiner``.

    Parameters (keyword-only, checked at ``fit``): ``visual``, ``reasoning``, ``holistic``: a calibrator kind
    (``"platt"``, ``"isotonic"``, ``"temperature"``, ``"histogram"``) or an unfitted ``ScoreCalibrator`` used as a
    template; ``combiner``: one of :data:`COMBINERS`; ``min_samples``: fewer labelled rows than this leave a
    component unfitted (and so unknown at ``calibrate``), recorded in ``notes_``; ``shift``: fit the shift
    discounts when covariates are given to ``fit``.
    """

    def __init__(
        self,
        *,
        visual: str | ScoreCalibrator = "platt",
        reasoning: str | ScoreCalibrator = "platt",
        holistic: str | ScoreCalibrator = "platt",
        combiner: str = "platt_harmonic",
        min_samples: int = 10,
        shift: bool = True,
    ) -> None:
        self.visual = visual
        self.reasoning = reasoning
        self.holistic = holistic
        self.combiner = combiner
        self.min_samples = min_samples
        self.shift = shift

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as given."""
        return {name: getattr(self, name) for name in (*_PARTS, "combiner", "min_samples", "shift")}

    def _validate_params(self) -> None:
        if self.combiner not in COMBINERS:
            raise CalibrationError(f"`combiner` must be one of {list(COMBINERS)}, got {self.combiner!r}")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise CalibrationError(f"`min_samples` must be an int >= 1, got {self.min_samples!r}")
        for name in _PARTS:
            if not isinstance(getattr(self, name), str | ScoreCalibrator):
                raise CalibrationError(
                    f"`{name}` must be a calibrator kind or a ScoreCalibrator, got {getattr(self, name)!r}"
                )

    def _new_part(self, name: str) -> ScoreCalibrator:
        spec = getattr(self, name)
        if isinstance(spec, ScoreCalibrator):
            return type(spec)(**spec.get_params())
        if isinstance(spec, str):
            return make_calibrator(spec)
        raise CalibrationError(f"`{name}` must be a calibrator kind or a ScoreCalibrator, got {spec!r}")

    # -- fit -------------------------------------------------------------------------------------------------
    def fit(
        self: _D,
        visual_scores: MaybeArray | None,
        reasoning_scores: MaybeArray | None,
        *,
        answer_correct: MaybeArray,
        perception_correct: MaybeArray | None = None,
        holistic_scores: MaybeArray | None = None,
        covariates: Mapping[str, MaybeArray] | None = None,
        discount_only: MaybeArray | None = None,
        verbalized: Mapping[str, MaybeArray] | None = None,
        groups: Sequence[str | None] | None = None,
    ) -> _D:
        """Fit every component that has enough labelled rows; returns ``self``. Inputs are not modified.

        ``covariates`` maps names of :data:`SHIFT_COVARIATES` to per-row values (NaN = not measured).
        ``discount_only`` marks rows (1) that teach only the shift discounts, not the calibrators and the combiner:
        inputs made unfamiliar on purpose (garbled-question copies), which are not inputs as users give them.
        ``verbalized`` maps ``visual`` / ``reasoning`` to the model's own scores in [0, 1] (NaN = not written).
        ``groups`` names each row's group (``None``: a group of its own kind) for cross-fitting (module docstring).
        """
        self._validate_params()
        y, v, r, h, perc = labelled_arrays(
            answer_correct, visual_scores, reasoning_scores, holistic_scores, perception_correct
        )
        n = y.shape[0]
        x = self._covariate_matrix(covariates, n)
        w = self._verbalized(verbalized, n)
        base = np.ones(n, dtype=bool)
        if discount_only is not None:
            base = _optional_array("discount_only", discount_only, n, labels=True) != 1.0
        self.notes_: list[str] = []
        self.n_: dict[str, int] = {}
        self.shift_: dict[str, ShiftDiscount] = {}
        self.verbal_: dict[str, dict[str, Any]] = {}
        self.visual_ = self._fit_part("visual", v, perc, base & ~np.isnan(perc))
        if np.any(~np.isnan(perc)):
            self.reasoning_target_ = "answer_correct_given_perception_correct"
            reasoning_rows = perc == 1.0
        else:
            self.reasoning_target_ = "answer_correct"
            self.notes_.append("no perception labels: reasoning calibrated against answer_correct")
            reasoning_rows = np.ones(n, dtype=bool)
        self.reasoning_ = self._fit_part("reasoning", r, y, base & reasoning_rows)
        self.holistic_ = self._fit_part("holistic", h, y, base)
        labels = self._groups(groups, n)
        vp = self._fit_verbal("visual", self._predict_part(self.visual_, v), w["visual"], perc, base)
        rp = self._predict_part(self.reasoning_, r)
        rp = self._fit_verbal("reasoning", rp, w["reasoning"], y, base & reasoning_rows)
        vf, rf = vp, rp  # what the discounts learn from: each row's group unseen, where groups are given
        if labels is not None:
            vf = self._blend("visual", self._cross_fit("visual", v, perc, base & ~np.isnan(perc), labels), w["visual"])
            rf = self._blend(
                "reasoning", self._cross_fit("reasoning", r, y, base & reasoning_rows, labels), w["reasoning"]
            )
        self._fit_shift("visual", vf, x, perc, ~np.isnan(perc))
        self._fit_shift("reasoning", rf, x, y, reasoning_rows)
        vc, rc = self._discount("visual", vp, x), self._discount("reasoning", rp, x)
        # The combiner maps the parts as predict will see them (fitted on every row) to P(answer correct).
        self.combiner_ = self._fit_combiner(np.where(base, vc, np.nan), np.where(base, rc, np.nan), y)
        overall = np.full(n, np.nan)
        vcf, rcf = self._discount("visual", vf, x), self._discount("reasoning", rf, x)
        both = ~np.isnan(vcf) & ~np.isnan(rcf)
        if np.any(both):
            overall[both] = self._combine(vcf[both], rcf[both])
        self._fit_shift("overall", overall, x, y, np.ones(n, dtype=bool))
        return self

    def _groups(self, groups: Sequence[str | None] | None, n: int) -> npt.NDArray[np.str_] | None:
        """The rows' group names for cross-fitting; ``None`` without groups or with fewer than two."""
        if groups is None:
            return None
        if len(groups) != n:
            raise CalibrationError(f"`groups` must name one group per row ({n}), got {len(groups)}")
        labels = np.array(["" if g is None else str(g) for g in groups], dtype=np.str_)
        if len(set(labels.tolist())) < 2:
            return None
        names = sorted(set(labels.tolist()))
        self.notes_.append(f"shift discounts and combiner learned from parts cross-fitted over {len(names)} groups")
        return labels

    def _cross_fit(
        self, name: str, scores: FloatArray, target: FloatArray, rows: Any, labels: npt.NDArray[np.str_]
    ) -> FloatArray:
        """``name``'s calibrated scores, each row's from a fit without its group (the full fit where too few rows
        are left without it, or no full fit exists)."""
        full: ScoreCalibrator | None = getattr(self, f"{name}_")
        out = self._predict_part(full, scores)
        if full is None:
            return out
        for group in np.unique(labels):
            inside = labels == group
            use = rows & ~inside & ~np.isnan(scores) & ~np.isnan(target)
            if int(np.sum(use)) < self.min_samples or len(set(target[use].tolist())) < 2:
                continue
            part = self._new_part(name).fit(scores[use], target[use])
            out[inside] = self._predict_part(part, scores[inside])
        return out

    def _covariate_matrix(self, covariates: Mapping[str, MaybeArray] | None, n: int) -> FloatArray:
        """``(n, len(SHIFT_COVARIATES))`` covariates, NaN where not measured; unknown names are refused."""
        covariates = covariates or {}
        unknown = set(covariates) - set(SHIFT_COVARIATES)
        if unknown:
            raise CalibrationError(f"unknown covariates {sorted(unknown)}; expected some of {list(SHIFT_COVARIATES)}")
        columns = [
            _optional_array(name, covariates.get(name), n, labels=False, bounded=False) for name in SHIFT_COVARIATES
        ]
        matrix = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
        if np.any(matrix < 0):
            raise CalibrationError("shift covariates must be >= 0 (0 = as familiar as a typical calibration input)")
        return matrix

    @staticmethod
    def _verbalized(verbalized: Mapping[str, MaybeArray] | None, n: int) -> dict[str, FloatArray]:
        """``{visual, reasoning}`` verbalized scores, NaN where not written; unknown names are refused."""
        verbalized = verbalized or {}
        unknown = set(verbalized) - set(VERBALIZED_FEATURES)
        if unknown:
            raise CalibrationError(f"verbalized scores for unknown components {sorted(unknown)}")
        return {
            name: _optional_array(f"verbalized {name}", verbalized.get(name), n, labels=False)
            for name in VERBALIZED_FEATURES
        }

    def _fit_verbal(self, name: str, p: FloatArray, w: FloatArray, target: FloatArray, rows: Any) -> FloatArray:
        """Fit ``name``'s blend of calibrated ``p`` and verbalized ``w`` (and ``w`` alone); the blended values."""
        labelled = rows & ~np.isnan(target) & ~np.isnan(w)
        both = labelled & ~np.isnan(p)
        fitted: dict[str, Any] = {}
        if int(np.sum(both)) >= self.min_samples:
            fitted["blend"] = _LogisticCombiner().fit(p[both], w[both], target[both])
        if int(np.sum(labelled)) >= self.min_samples:
            fitted["alone"] = PlattScaling().fit(w[labelled], target[labelled])
        if fitted:
            self.verbal_[name] = fitted
        return self._blend(name, p, w)

    def _blend(self, name: str, p: FloatArray, w: FloatArray) -> FloatArray:
        """``p`` where no verbalized score (or no fitted blend); the blend where both; ``w`` alone where only it."""
        fitted = getattr(self, "verbal_", {}).get(name)
        if not fitted:
            return p
        out = p.copy()
        both = ~np.isnan(p) & ~np.isnan(w)
        if "blend" in fitted and np.any(both):
            out[both] = fitted["blend"].predict(p[both], w[both])
        only = np.isnan(p) & ~np.isnan(w)
        if "alone" in fitted and np.any(only):
            out[only] = fitted["alone"].predict(w[only])
        return out

    def _fit_shift(self, name: str, p: FloatArray, x: FloatArray, target: FloatArray, rows: Any) -> FloatArray:
        """Fit ``name``'s discount on the rows where it and its target are known; the discounted ``p``."""
        measured = ~np.all(np.isnan(x), axis=0)
        if not self.shift or not np.any(measured):
            return p
        use = rows & ~np.isnan(p) & ~np.isnan(target)
        if int(np.sum(use)) < self.min_samples:
            return p
        names = [c for c, m in zip(SHIFT_COVARIATES, measured, strict=True) if m]
        columns = np.nan_to_num(x[:, measured], nan=0.0)
        self.shift_[name] = ShiftDiscount(names).fit(p[use], columns[use], target[use])
        return self._discount(name, p, x)

    def _discount(self, name: str, p: FloatArray, x: FloatArray) -> FloatArray:
        discount = self.shift_.get(name)
        known = ~np.isnan(p)
        if discount is None or not np.any(known):
            return p
        columns = x[:, [SHIFT_COVARIATES.index(c) for c in discount.names]]
        out = p.copy()
        out[known] = discount.predict(p[known], columns[known])
        return out

    def _fit_part(self, name: str, scores: FloatArray, target: FloatArray, rows: Any) -> ScoreCalibrator | None:
        use = rows & ~np.isnan(scores) & ~np.isnan(target)
        self.n_[name] = int(np.sum(use))
        if self.n_[name] < self.min_samples:
            if np.any(~np.isnan(scores)):
                self.notes_.append(f"{name}: {self.n_[name]} labelled rows < min_samples={self.min_samples}")
            return None
        return self._new_part(name).fit(scores[use], target[use])

    def _fit_combiner(self, vc: FloatArray, rc: FloatArray, y: FloatArray) -> Any:
        """The combiner fitted on calibrated parts ``vc``, ``rc`` (NaN = unknown)."""
        if self.combiner in ("harmonic", "product") or self.visual_ is None or self.reasoning_ is None:
            return None
        use = ~np.isnan(vc) & ~np.isnan(rc) & ~np.isnan(y)
        self.n_["overall"] = int(np.sum(use))
        if self.n_["overall"] < self.min_samples:
            self.notes_.append(f"overall: {self.n_['overall']} rows < min_samples; harmonic mean used")
            return None
        if self.combiner == "logistic":
            return _LogisticCombiner().fit(vc[use], rc[use], y[use])
        part = PlattScaling() if self.combiner == "platt_harmonic" else IsotonicCalibrator()
        return part.fit(harmonic_mean_array(vc[use], rc[use]), y[use])

    # -- predict ---------------------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``from_dict`` of a fitted dict) has run."""
        return hasattr(self, "combiner_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise CalibrationError("DecoupledCalibrator is not fitted, call fit first")

    def _combine(self, vc: FloatArray, rc: FloatArray) -> FloatArray:
        if self.combiner == "product":
            return vc * rc
        if self.combiner_ is None:
            return harmonic_mean_array(vc, rc)
        if isinstance(self.combiner_, _LogisticCombiner):
            return self.combiner_.predict(vc, rc)
        out: FloatArray = self.combiner_.predict(harmonic_mean_array(vc, rc))
        return out

    def predict_components(
        self,
        visual_scores: MaybeArray | None,
        reasoning_scores: MaybeArray | None,
        holistic_scores: MaybeArray | None = None,
        covariates: Mapping[str, MaybeArray] | None = None,
        verbalized: Mapping[str, MaybeArray] | None = None,
    ) -> dict[str, FloatArray]:
        """Calibrated ``visual``, ``reasoning`` and ``overall`` arrays for a batch (NaN = unknown)."""
        self._require_fitted()
        arrays = [visual_scores, reasoning_scores, holistic_scores]
        n = next((len(np.asarray(a, dtype=object)) for a in arrays if a is not None), 0)
        v, r, h = (_optional_array(f"{p}_scores", a, n, labels=False) for p, a in zip(_PARTS, arrays, strict=True))
        x = self._covariate_matrix(covariates, n)
        parts = zip(_PARTS, (v, r, h), strict=True)
        out = {name: self._predict_part(getattr(self, f"{name}_"), s) for name, s in parts}
        w = self._verbalized(verbalized, n)
        for name in VERBALIZED_FEATURES:
            out[name] = self._blend(name, out[name], w[name])
        visual, reasoning = self._discount("visual", out["visual"], x), self._discount("reasoning", out["reasoning"], x)
        overall = np.full(n, np.nan)
        both = ~np.isnan(visual) & ~np.isnan(reasoning)
        if np.any(both):
            overall[both] = self._combine(visual[both], reasoning[both])
        overall = self._discount("overall", overall, x)
        fallback = ~both & ~np.isnan(out["holistic"])
        overall[fallback] = out["holistic"][fallback]
        return {"visual": visual, "reasoning": reasoning, "overall": overall}

    @staticmethod
    def _predict_part(part: ScoreCalibrator | None, scores: FloatArray) -> FloatArray:
        out = np.full(scores.shape[0], np.nan)
        known = ~np.isnan(scores)
        if part is not None and np.any(known):
            out[known] = part.predict(scores[known])
        return out

    def calibrate(self, signals: Signals) -> Confidence:
        """The calibrated ``Confidence`` of one generation; unknown stays ``None``, sources say what made each."""
        self._require_fitted()

        def one(x: float | None) -> FloatArray:
            return np.array([np.nan if x is None else x], dtype=np.float64)

        covariates = {name: one(signals.features.get(name)) for name in SHIFT_COVARIATES}
        verbal = {name: signals.features.get(feature) for name, feature in VERBALIZED_FEATURES.items()}
        got = self.predict_components(
            one(signals.visual),
            one(signals.reasoning),
            one(signals.holistic),
            covariates=covariates,
            verbalized={name: one(value) for name, value in verbal.items()},
        )
        values = {k: (None if np.isnan(a[0]) else float(a[0])) for k, a in got.items()}
        sources: dict[str, tuple[str, ...]] = {}
        for name in ("visual", "reasoning"):
            if values[name] is None:
                continue
            fitted = getattr(self, "verbal_", {}).get(name, {})
            measured = getattr(signals, name) is not None
            part: ScoreCalibrator | None = getattr(self, f"{name}_")
            if measured and part is not None:
                sources[name] = (*signals.sources.get(name, (name,)), f"calibrator:{part.kind}")
            if verbal[name] is not None and ("blend" if measured else "alone") in fitted:
                kind = "verbalized:blend" if measured else "verbalized:platt"
                sources[name] = (*sources.get(name, ()), VERBALIZED_FEATURES[name], kind)
        if values["visual"] is not None and values["reasoning"] is not None:
            sources["overall"] = ("visual", "reasoning", f"combiner:{self._effective_combiner()}")
        elif values["overall"] is not None:
            sources["overall"] = (*signals.sources.get("holistic", ("holistic",)), "calibrator:holistic")
        for name, discount in self.shift_.items():
            if name in sources:
                sources[name] = (*sources[name], *discount.names, "shift_discount")
        if signals.familiarity is not None:
            sources["familiarity"] = signals.sources.get("familiarity", ("familiarity",))
        stability = signals.features.get(STABILITY)
        if stability is not None:
            sources["stability"] = (STABILITY_DROP,)
        return Confidence(**values, familiarity=signals.familiarity, stability=stability, sources=sources)

    def _effective_combiner(self) -> str:
        if self.combiner != "product" and self.combiner_ is None:
            return "harmonic"
        return self.combiner

    # -- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: ``{"type": "decoupled", "params", "fitted"}``."""
        params = {k: (v.to_dict() if isinstance(v, ScoreCalibrator) else v) for k, v in self.get_params().items()}
        fitted: dict[str, Any] | None = None
        if self.is_fitted:
            parts: dict[str, ScoreCalibrator | None] = {p: getattr(self, f"{p}_") for p in _PARTS}
            fitted = {p: (None if c is None else c.to_dict()) for p, c in parts.items()}
            fitted["combiner"] = None if self.combiner_ is None else self.combiner_.to_dict()
            fitted["shift"] = {name: d.to_dict() for name, d in self.shift_.items()}
            if self.verbal_:
                fitted["verbalized"] = {
                    name: {kind: model.to_dict() for kind, model in parts.items()}
                    for name, parts in self.verbal_.items()
                }
            fitted.update(reasoning_target=self.reasoning_target_, n=dict(self.n_), notes=list(self.notes_))
        return {"type": "decoupled", "params": params, "fitted": fitted}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecoupledCalibrator:
        """Rebuild from :meth:`to_dict` output; anything malformed is a CalibrationError."""
        try:
            if data["type"] != "decoupled":
                raise CalibrationError(f"expected a 'decoupled' calibrator dict, got type {data['type']!r}")
            params: dict[str, Any] = {
                k: (calibrator_from_dict(v) if isinstance(v, Mapping) else v) for k, v in data["params"].items()
            }
            calibrator = cls(**params)
            calibrator._validate_params()
            fitted = data["fitted"]
            if fitted is None:
                return calibrator
            for part in _PARTS:
                setattr(calibrator, f"{part}_", None if fitted[part] is None else calibrator_from_dict(fitted[part]))
            combiner = fitted["combiner"]
            calibrator.combiner_ = (
                None
                if combiner is None
                else _LogisticCombiner.from_dict(combiner)
                if combiner.get("type") == "logistic"
                else calibrator_from_dict(combiner)
            )
            shift = fitted.get("shift") or {}  # absent in artifacts written before shift discounts
            unknown = set(shift) - set(_DISCOUNTED)
            if unknown:
                raise CalibrationError(f"shift discounts for unknown components {sorted(unknown)}")
            calibrator.shift_ = {str(k): ShiftDiscount.from_dict(v) for k, v in shift.items()}
            verbal = fitted.get("verbalized") or {}  # absent in artifacts of models that write no scores
            if set(verbal) - set(VERBALIZED_FEATURES):
                raise CalibrationError(f"verbalized blends for unknown components {sorted(verbal)}")
            calibrator.verbal_ = {
                str(name): {
                    str(kind): _LogisticCombiner.from_dict(d) if kind == "blend" else calibrator_from_dict(d)
                    for kind, d in parts.items()
                }
                for name, parts in verbal.items()
            }
            calibrator.reasoning_target_ = str(fitted["reasoning_target"])
            calibrator.n_ = {str(k): int(v) for k, v in fitted["n"].items()}
            calibrator.notes_ = [str(x) for x in fitted["notes"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise CalibrationError(f"malformed decoupled calibrator dict: missing or bad {exc}") from exc
        return calibrator
