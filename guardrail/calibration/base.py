"""What the guard needs to turn raw signals into probabilities: the ``Calibrator`` protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..confidence.feature_names import STABILITY
from ..types import Confidence, Signals

__all__ = ["Calibrator", "PassThroughCalibrator", "harmonic_mean"]


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """2ab/(a+b), 0 when either is 0, ``None`` when either is unknown (one weak part sinks the whole)."""
    if a is None or b is None:
        return None
    if a <= 0.0 or b <= 0.0:
        return 0.0
    return 2.0 * a * b / (a + b)


@runtime_checkable
class Calibrator(Protocol):
    """Maps raw ``Signals`` to calibrated ``Confidence``; raises :class:`guardrail.CalibrationError` on failure."""

    def calibrate(self, signals: Signals) -> Confidence:
        """The calibrated confidence for one generation's signals."""
        ...


class PassThroughCalibrator:
    """Uses the raw scores as they are (no fitted map): for tests and for signals already calibrated.

    ``overall`` is the harmonic mean of visual and reasoning when both are known, else the holistic score when
    one was measured, else unknown.
    """

    def calibrate(self, signals: Signals) -> Confidence:
        """Copy the raw scores into a ``Confidence``."""
        overall = harmonic_mean(signals.visual, signals.reasoning)
        sources = dict(signals.sources)
        if overall is None and signals.holistic is not None:
            overall = signals.holistic
            sources.setdefault("overall", sources.get("holistic", ("holistic",)))
        stability = signals.features.get(STABILITY)
        return Confidence(
            visual=signals.visual, reasoning=signals.reasoning, overall=overall, stability=stability, sources=sources
        )
