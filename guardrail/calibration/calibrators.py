"""Score calibrators: monotone maps from a raw score to P(correct) (METHOD.md section 5).

They follow scikit-learn's estimator habits: ``__init__`` only stores keyword-only parameters; the allowed
values are declared as data (``_constraints``) and checked at ``fit``; fitted state ends in ``_``; ``predict``
before ``fit`` raises :class:`guardrail.CalibrationError` ("not fitted, call fit first"); ``to_dict`` /
``from_dict`` round-trip exactly through JSON. Every map is non-decreasing, so the ranking (AUROC) is kept:
better ranking needs better signals, not better calibrators.

- :class:`TemperatureScaling` sigmoid(logit(s) / T), one parameter (Guo et al. 2017).
- :class:`PlattScaling` sigmoid(a logit(s) + b), a >= 0, with Platt's target smoothing (Platt 1999).
- :class:`IsotonicCalibrator` the pool-adjacent-violators fit, linear between knots (Zadrozny & Elkan 2002).
- :class:`HistogramBinning` the accuracy of equal-width right-closed bins (Zadrozny & Elkan 2001), made monotone
  by pooling adjacent bins that violate the order (``monotone=True``, the default).

Scores are probabilities in [0, 1] by default; temperature and Platt also take real-valued logits
(``scale="logit"``), isotonic any real score.

>>> cal = PlattScaling().fit([0.2, 0.4, 0.6, 0.8, 0.9], [0, 0, 1, 1, 1])
>>> bool(cal.predict([0.9])[0] > cal.predict([0.2])[0])
True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from .._extras import require
from ..errors import CalibrationError
from .metrics import _as_1d, _bin_index

__all__ = [
    "CALIBRATORS",
    "HistogramBinning",
    "IsotonicCalibrator",
    "PlattScaling",
    "ScoreCalibrator",
    "TemperatureScaling",
    "calibrator_from_dict",
    "make_calibrator",
]

FloatArray = npt.NDArray[np.float64]
_C = TypeVar("_C", bound="ScoreCalibrator")
_Check = tuple[Callable[[Any], bool], str]


def _is_open_half(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0.0 < v < 0.5


def _is_int_at_least_1(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_scale(v: Any) -> bool:
    return v in ("probability", "logit")


_EPS: _Check = (_is_open_half, "a float in (0, 0.5)")
_SCALE: _Check = (_is_scale, "'probability' or 'logit'")


class ScoreCalibrator(ABC):
    """Base of the calibrators: parameter checks, input checks, the not-fitted guard and serialisation."""

    kind: ClassVar[str]
    _constraints: ClassVar[Mapping[str, _Check]]
    _fitted_names: ClassVar[tuple[str, ...]]

    # -- parameters ------------------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as given."""
        return {name: getattr(self, name) for name in self._constraints}

    def _validate_params(self) -> None:
        for name, (ok, expected) in self._constraints.items():
            value = getattr(self, name)
            if not ok(value):
                raise CalibrationError(f"`{name}` must be {expected}, got {value!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- inputs ----------------------------------------------------------------------------------------------
    @property
    def _accepts_reals(self) -> bool:
        return getattr(self, "scale", "probability") == "logit"

    def _check_scores(self, scores: npt.ArrayLike) -> FloatArray:
        s = _as_1d("scores", scores)
        if not np.all(np.isfinite(s)):
            raise CalibrationError(f"`scores` must be finite, got {float(s[~np.isfinite(s)][0])!r}")
        if not self._accepts_reals and (np.any(s < 0.0) or np.any(s > 1.0)):
            bad = float(s[(s < 0.0) | (s > 1.0)][0])
            raise CalibrationError(
                f"`scores` must be in [0, 1] for {type(self).__name__}, got {bad!r}"
                " (real-valued scores: IsotonicCalibrator, or scale='logit')"
            )
        return s

    @staticmethod
    def _check_labels(labels: npt.ArrayLike, n: int) -> FloatArray:
        y = _as_1d("labels", labels)
        if y.shape[0] != n:
            raise CalibrationError(f"`labels` must have the length of `scores` ({n}), got {y.shape[0]}")
        if np.any((y != 0.0) & (y != 1.0)):
            raise CalibrationError(f"`labels` must hold 0/1 labels, got {float(y[(y != 0.0) & (y != 1.0)][0])!r}")
        return y

    # -- estimator interface ---------------------------------------------------------------------------------
    def fit(self: _C, scores: npt.ArrayLike, labels: npt.ArrayLike) -> _C:
        """Fit the map from ``scores`` to P(label = 1); returns ``self``. Inputs are not modified."""
        self._validate_params()
        s = self._check_scores(scores)
        y = self._check_labels(labels, s.shape[0])
        self._fit(s, y)
        return self

    def predict(self, scores: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities for ``scores`` (a new array; inputs are not modified)."""
        if not self.is_fitted:
            raise CalibrationError(f"{type(self).__name__} is not fitted, call fit first")
        out: FloatArray = np.clip(self._predict(self._check_scores(scores)), 0.0, 1.0)
        return out

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``from_dict`` of a fitted dict) has run."""
        return all(hasattr(self, name) for name in self._fitted_names)

    @abstractmethod
    def _fit(self, s: FloatArray, y: FloatArray) -> None: ...

    @abstractmethod
    def _predict(self, s: FloatArray) -> FloatArray: ...

    # -- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"type", "params", "fitted"}`` with plain JSON values (``fitted`` is None before ``fit``)."""
        fitted = None
        if self.is_fitted:
            fitted = {name: _plain(getattr(self, name)) for name in self._fitted_names}
        return {"type": self.kind, "params": self.get_params(), "fitted": fitted}

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        """Rebuild a calibrator from :meth:`to_dict` output; a malformed dict is a CalibrationError."""
        if not isinstance(data, Mapping) or data.get("type") != cls.kind:
            got = data.get("type") if isinstance(data, Mapping) else type(data).__name__
            raise CalibrationError(f"expected a '{cls.kind}' calibrator dict, got type {got!r}")
        params = data.get("params")
        if not isinstance(params, Mapping) or set(params) != set(cls._constraints):
            raise CalibrationError(
                f"'{cls.kind}' calibrator dict must have params {sorted(cls._constraints)}, got {params!r}"
            )
        calibrator = cls(**params)
        calibrator._validate_params()
        fitted = data.get("fitted")
        if fitted is not None:
            if not isinstance(fitted, Mapping) or set(fitted) != set(cls._fitted_names):
                raise CalibrationError(
                    f"'{cls.kind}' calibrator dict must have fitted {sorted(cls._fitted_names)}, got {fitted!r}"
                )
            for name in cls._fitted_names:
                setattr(calibrator, name, _restore(fitted[name], name))
        return calibrator


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [float(v) for v in value]
    return float(value)


def _restore(value: Any, name: str) -> Any:
    try:
        if isinstance(value, list):
            array = np.array(value, dtype=np.float64)
            if array.ndim == 1 and array.size and np.all(np.isfinite(array)):
                return array
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    except (TypeError, ValueError):
        pass
    raise CalibrationError(f"fitted value `{name}` must be a finite number or non-empty list, got {value!r}")


def _logit(s: FloatArray, eps: float) -> FloatArray:
    p = np.clip(s, eps, 1.0 - eps)
    out: FloatArray = np.log(p) - np.log1p(-p)
    return out


def _sigmoid(z: FloatArray) -> FloatArray:
    """The logistic function, without overflow: 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) below (the two forms
    of SciPy's ``expit``, on NumPy alone, so that applying a fitted calibrator needs no SciPy)."""
    e = np.exp(-np.abs(z))
    out: FloatArray = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


def _scipy_optimize(feature: str) -> Any:
    """``scipy.optimize``, which only fitting needs (the ``calibrate`` extra)."""
    return require("scipy.optimize", extra="calibrate", feature=feature)


def _isotonic_regression() -> Any:
    """scikit-learn's ``IsotonicRegression`` (the ``calibrate`` extra)."""
    return require("sklearn.isotonic", extra="calibrate", feature="fitting an isotonic map").IsotonicRegression


class TemperatureScaling(ScoreCalibrator):
    """sigmoid(z / T) with z = logit(clip(s, eps, 1 - eps)) (or z = s with ``scale="logit"``); fits ``temperature_``.

    The binary form of Guo et al. (2017), "On Calibration of Modern Neural Networks", section 4.2: one
    parameter, fitted by minimising the NLL over log T in [-7, 7]. T > 0 keeps the ranking.
    """

    kind = "temperature"
    _constraints: ClassVar[Mapping[str, _Check]] = {"eps": _EPS, "scale": _SCALE}
    _fitted_names = ("temperature_",)
    temperature_: float

    def __init__(self, *, eps: float = 1e-6, scale: str = "probability") -> None:
        self.eps = eps
        self.scale = scale

    def _z(self, s: FloatArray) -> FloatArray:
        return s if self.scale == "logit" else _logit(s, self.eps)

    def _fit(self, s: FloatArray, y: FloatArray) -> None:
        minimize_scalar = _scipy_optimize("fitting TemperatureScaling").minimize_scalar
        z = self._z(s)

        def nll(log_t: float) -> float:
            a = z / math.exp(log_t)
            return float(np.mean(np.logaddexp(0.0, a) - y * a))

        result = minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded", options={"xatol": 1e-10})
        self.temperature_ = float(math.exp(result.x))

    def _predict(self, s: FloatArray) -> FloatArray:
        return _sigmoid(self._z(s) / self.temperature_)


class PlattScaling(ScoreCalibrator):
    """sigmoid(a z + b), z = logit(clip(s, eps, 1 - eps)) (or z = s with ``scale="logit"``); fits ``a_``, ``b_``.

    Platt (1999), "Probabilistic Outputs for Support Vector Machines": a logistic regression on the score, with
    targets (N+ + 1)/(N+ + 2) and 1/(N- + 2) when ``smoothing`` (his guard against over-fitting, also used by
    scikit-learn). The slope is bounded to a >= 0 so that the map never reverses the ranking.
    """

    kind = "platt"
    _constraints: ClassVar[Mapping[str, _Check]] = {
        "eps": _EPS,
        "scale": _SCALE,
        "smoothing": (_is_bool, "a bool"),
    }
    _fitted_names = ("a_", "b_")
    a_: float
    b_: float

    def __init__(self, *, eps: float = 1e-6, scale: str = "probability", smoothing: bool = True) -> None:
        self.eps = eps
        self.scale = scale
        self.smoothing = smoothing

    def _z(self, s: FloatArray) -> FloatArray:
        return s if self.scale == "logit" else _logit(s, self.eps)

    def _fit(self, s: FloatArray, y: FloatArray) -> None:
        minimize = _scipy_optimize("fitting PlattScaling").minimize
        z = self._z(s)
        t = y
        if self.smoothing:
            n_pos = float(np.sum(y))
            n_neg = float(y.shape[0]) - n_pos
            t = np.where(y == 1.0, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

        def loss(ab: FloatArray) -> tuple[float, FloatArray]:
            a = ab[0] * z + ab[1]
            residual = _sigmoid(a) - t
            grad = np.array([np.mean(residual * z), np.mean(residual)])
            return float(np.mean(np.logaddexp(0.0, a) - t * a)), grad

        result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(0.0, 1e3), (-50.0, 50.0)])
        self.a_, self.b_ = float(result.x[0]), float(result.x[1])

    def _predict(self, s: FloatArray) -> FloatArray:
        return _sigmoid(self.a_ * self._z(s) + self.b_)


class IsotonicCalibrator(ScoreCalibrator):
    """The non-decreasing step fit of pool-adjacent-violators, interpolated linearly between its knots.

    Zadrozny & Elkan (2002), "Transforming classifier scores into accurate multiclass probability estimates".
    Fitted with scikit-learn's ``IsotonicRegression``; only the knots (``x_``, ``y_``) are kept, and scores
    outside [x_[0], x_[-1]] take the end values. Any real score is accepted.
    """

    kind = "isotonic"
    _constraints: ClassVar[Mapping[str, _Check]] = {}
    _fitted_names = ("x_", "y_")
    x_: FloatArray
    y_: FloatArray

    def __init__(self) -> None:
        pass

    @property
    def _accepts_reals(self) -> bool:
        return True

    def _fit(self, s: FloatArray, y: FloatArray) -> None:
        model = _isotonic_regression()(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y)
        self.x_ = np.asarray(model.X_thresholds_, dtype=np.float64)
        self.y_ = np.asarray(model.y_thresholds_, dtype=np.float64)

    def _predict(self, s: FloatArray) -> FloatArray:
        if self.x_.shape != self.y_.shape or np.any(np.diff(self.x_) < 0) or np.any(np.diff(self.y_) < 0):
            raise CalibrationError("`x_` and `y_` must be non-decreasing knots of one length")
        out: FloatArray = np.interp(s, self.x_, self.y_)
        return out


class HistogramBinning(ScoreCalibrator):
    """The accuracy of the score's equal-width right-closed bin (Zadrozny & Elkan 2001); fits ``values_``.

    With ``monotone=True`` (default) bin accuracies that decrease are pooled (weighted isotonic regression over
    the bins), so the map keeps the ranking; empty bins take their neighbours' values. ``monotone=False`` is the
    classic, possibly non-monotone, form.
    """

    kind = "histogram"
    _constraints: ClassVar[Mapping[str, _Check]] = {
        "n_bins": (_is_int_at_least_1, "an int >= 1"),
        "monotone": (_is_bool, "a bool"),
    }
    _fitted_names = ("values_",)
    values_: FloatArray

    def __init__(self, *, n_bins: int = 10, monotone: bool = True) -> None:
        self.n_bins = n_bins
        self.monotone = monotone

    def _fit(self, s: FloatArray, y: FloatArray) -> None:
        index = _bin_index(s, self.n_bins)
        count = np.bincount(index, minlength=self.n_bins).astype(np.float64)
        hits = np.bincount(index, weights=y, minlength=self.n_bins)
        full = count > 0
        centres = (np.arange(self.n_bins) + 0.5) / self.n_bins
        accuracy = hits[full] / count[full]
        if self.monotone:
            model = _isotonic_regression()(out_of_bounds="clip").fit(centres[full], accuracy, sample_weight=count[full])
            values = np.asarray(model.predict(centres), dtype=np.float64)
        else:  # empty bins: the nearest non-empty bin's accuracy
            nearest = np.abs(centres[:, None] - centres[full][None, :]).argmin(axis=1)
            values = accuracy[nearest]
        self.values_ = values

    def _predict(self, s: FloatArray) -> FloatArray:
        if self.values_.shape[0] != self.n_bins:
            raise CalibrationError(f"`values_` has {self.values_.shape[0]} entries, expected n_bins={self.n_bins}")
        out: FloatArray = self.values_[_bin_index(s, self.n_bins)]
        return out


CALIBRATORS: Mapping[str, type[ScoreCalibrator]] = {
    cls.kind: cls for cls in (TemperatureScaling, PlattScaling, IsotonicCalibrator, HistogramBinning)
}
"""The calibrator classes by ``kind``: temperature, platt, isotonic, histogram."""


def make_calibrator(kind: str, **params: Any) -> ScoreCalibrator:
    """A new, unfitted calibrator of ``kind`` (one of :data:`CALIBRATORS`) with ``params``."""
    if kind not in CALIBRATORS:
        raise CalibrationError(f"`kind` must be one of {sorted(CALIBRATORS)}, got {kind!r}")
    try:
        return CALIBRATORS[kind](**params)
    except TypeError as exc:
        raise CalibrationError(f"bad parameters for a '{kind}' calibrator: {exc}") from exc


def calibrator_from_dict(data: Mapping[str, Any]) -> ScoreCalibrator:
    """Rebuild any calibrator from its :meth:`ScoreCalibrator.to_dict` output."""
    kind = data.get("type") if isinstance(data, Mapping) else None
    if not isinstance(kind, str) or kind not in CALIBRATORS:
        raise CalibrationError(f"calibrator dict `type` must be one of {sorted(CALIBRATORS)}, got {kind!r}")
    return CALIBRATORS[kind].from_dict(data)
