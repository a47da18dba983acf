"""Calibration: calibrators, metrics, certified thresholds and reports."""

from .base import Calibrator, PassThroughCalibrator, harmonic_mean

__all__ = ["Calibrator", "PassThroughCalibrator", "harmonic_mean"]
