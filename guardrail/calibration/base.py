"""What the guard needs to turn raw signals into probabilities: the ``Calibrator`` protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..confidence.feature_names import STABILITY
from ..types import Confidence, Signals

__all__ = ["Calibrator", "PassThroughCalibrator", "calibration_advice", "harmonic_mean", "is_calibrated"]


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
    """Uses the raw scores as they are (no fitted map): what a guard without a calibration artifact runs.

    ``overall`` is the harmonic mean of visual and reasoning when both are known, else the holistic score when
    one was measured, else unknown. The confidences it gives say ``calibrated=False`` (raw scores, not
    probabilities), so a policy does not accept on them unless it opted in (``accept_uncalibrated``);
    ``calibrated=True`` declares that the signals already are calibrated probabilities (computed and calibrated
    elsewhere, or a test's scripted numbers).
    """

    def __init__(self, *, calibrated: bool = False) -> None:
        self.calibrated = calibrated

    def __repr__(self) -> str:
        return f"PassThroughCalibrator(calibrated={self.calibrated})"

    def calibrate(self, signals: Signals) -> Confidence:
        """Copy the raw scores into a ``Confidence``."""
        overall = harmonic_mean(signals.visual, signals.reasoning)
        sources = dict(signals.sources)
        if overall is None and signals.holistic is not None:
            overall = signals.holistic
            sources.setdefault("overall", sources.get("holistic", ("holistic",)))
        stability = signals.features.get(STABILITY)
        return Confidence(
            visual=signals.visual,
            reasoning=signals.reasoning,
            overall=overall,
            stability=stability,
            sources=sources,
            calibrated=self.calibrated,
        )


def is_calibrated(calibrator: Calibrator) -> bool:
    """Whether ``calibrator`` maps signals to probabilities: every calibrator but a :class:`PassThroughCalibrator`
    that passes raw scores (one built with ``calibrated=True`` declares its signals calibrated already)."""
    return not isinstance(calibrator, PassThroughCalibrator) or calibrator.calibrated


def calibration_advice() -> str:
    """How to calibrate a model, and how many labelled rows it takes: what an uncalibrated guard's warnings say."""
    from .fit import MIN_FIT_ROWS, MIN_ROWS

    return (
        "calibrate the model on labelled data: `guardrail calibrate --model FOLDER --data labelled.jsonl "
        '--out FOLDER/guardrail_calibration.json` (lines {"image", "question", "answer", "perception"}; '
        f"at the very least {MIN_ROWS} labelled items, half fitting the calibrators and half certifying them, each "
        f"component with {MIN_FIT_ROWS} labelled rows, right and wrong answers among them, in the half it is fitted "
        "on; a few hundred items at least in practice, the reference model's artifact uses 3,000)"
    )
