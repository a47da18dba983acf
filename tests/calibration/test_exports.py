"""The calibration package's public names change only on purpose."""

from __future__ import annotations

import guardrail.calibration as calibration

EXPECTED = {
    "ARTIFACT_SCHEMA", "ARTIFACT_VERSION", "BootstrapCI", "CALIBRATORS", "COMBINERS", "CalibrationArtifact",
    "CalibrationSummary", "Calibrator", "CertifiedThreshold", "DEFAULT_GRID", "DecoupledCalibrator",
    "HistogramBinning", "IsotonicCalibrator", "LTT_GRID", "NoiseFloor", "PassThroughCalibrator", "PlattScaling",
    "ReliabilityDiagram", "RiskCoverage", "ScoreCalibrator", "TemperatureScaling", "VisualNormalization",
    "adaptive_calibration_error", "aurc", "auroc", "binomial_upper_bound", "bootstrap_ci", "brier_score",
    "calibration_summary", "calibrator_from_dict", "certify_pair", "certify_threshold", "certify_threshold_ltt",
    "eaurc", "ece_noise_floor", "expected_calibration_error", "fingerprint_data", "fingerprint_model",
    "fit_artifact", "harmonic_mean", "harmonic_mean_array", "load_artifact", "make_calibrator",
    "maximum_calibration_error", "negative_log_likelihood", "reliability_diagram_data", "risk_coverage_curve",
    "save_artifact", "selective_accuracy",
}  # fmt: skip


def test_exported_names_are_pinned() -> None:
    assert set(calibration.__all__) == EXPECTED
    assert len(calibration.__all__) == len(EXPECTED)
    for name in EXPECTED:
        assert getattr(calibration, name) is not None
