"""Calibration: calibrators, metrics, certified thresholds and the calibration artifact (METHOD.md 5-7).

This namespace holds what a user fits, measures or loads. The machinery behind it (grids, bootstrap, the
perturbation choice, the scoring pipeline) stays in its modules: import it from there when you need it.
"""

from .artifact import CalibrationArtifact, fingerprint_model, load_artifact, save_artifact
from .base import Calibrator, PassThroughCalibrator
from .calibrators import HistogramBinning, IsotonicCalibrator, PlattScaling, ScoreCalibrator, TemperatureScaling
from .decoupled import DecoupledCalibrator, ShiftDiscount
from .fit import fit_artifact
from .metrics import (
    ReliabilityDiagram,
    RiskCoverage,
    adaptive_calibration_error,
    aurc,
    auroc,
    brier_score,
    eaurc,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram_data,
    risk_coverage_curve,
    selective_accuracy,
)
from .risk import CertifiedThreshold, certify_pair, certify_threshold
from .summary import CalibrationSummary, calibration_summary

__all__ = [
    "CalibrationArtifact",
    "CalibrationSummary",
    "Calibrator",
    "CertifiedThreshold",
    "DecoupledCalibrator",
    "HistogramBinning",
    "IsotonicCalibrator",
    "PassThroughCalibrator",
    "PlattScaling",
    "ReliabilityDiagram",
    "RiskCoverage",
    "ScoreCalibrator",
    "ShiftDiscount",
    "TemperatureScaling",
    "adaptive_calibration_error",
    "aurc",
    "auroc",
    "brier_score",
    "calibration_summary",
    "certify_pair",
    "certify_threshold",
    "eaurc",
    "expected_calibration_error",
    "fingerprint_model",
    "fit_artifact",
    "load_artifact",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram_data",
    "risk_coverage_curve",
    "save_artifact",
    "selective_accuracy",
]
