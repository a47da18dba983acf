"""The public surfaces: what ``import guardrail`` and each sub-package export is deliberate, and stays light.

Every namespace a user imports from is pinned here, in one table: a name appears or disappears only on purpose.
Loop internals (how the guard decides on errors, calibration's grids and bootstrap) stay in their modules.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import guardrail

SURFACES: dict[str, set[str]] = {
    "guardrail": {
        "Action", "AgreementEstimator", "ArtifactError", "AsyncBackend", "AsyncEstimator", "Attempt", "Backend",
        "BackendError", "BackendTimeout", "BatchBackend", "BatchEstimator", "CalibrationArtifact", "CalibrationError",
        "Calibrator", "Component",
        "Confidence", "ConfigurationError", "Decision", "DecoupledEstimator", "ErrorInfo", "Escalation",
        "Estimator", "EstimatorError", "Generation", "GenerationOptions", "Guard", "GuardResult", "GuardrailError",
        "ImageBlock", "ImageError", "InputError", "LangChainBackend", "Message", "OpenAICompatibleBackend",
        "OtelTelemetry", "PassThroughCalibrator", "Policy", "PolicyError", "PolicyProblem", "Request",
        "ScoringBackend", "Signals", "Status", "Telemetry", "TextBlock", "TextScoringBackend", "TransformersBackend",
        "UncalibratedWarning", "Usage", "ViewProvider", "ViewProviderError", "WorkerLimitError", "ZoomProvider",
        "__version__",
        "configure_telemetry", "decide", "load_artifact", "load_guard", "load_policy",
    },
    "guardrail.backends": {
        "AsyncBackend", "Backend", "BatchBackend", "BatchScoringBackend", "CheckingBackend", "CoalescingBackend",
        "LangChainBackend",
        "OpenAICompatibleBackend", "ReferenceScores", "ReferenceScoringBackend", "ScoringBackend", "ScoringItem",
        "ScoringUnavailable", "TeacherForcedScores", "TextScores", "TextScoringBackend", "TransformersBackend",
    },
    "guardrail.confidence": {
        "AgreementEstimator", "AsyncEstimator", "BatchEstimator", "DecoupledEstimator", "Estimator",
        "FamiliarityReference", "PerturbationKind", "VisualNormalization", "perturb_image",
    },
    "guardrail.calibration": {
        "CalibrationArtifact", "CalibrationSummary", "Calibrator", "CertifiedThreshold", "DecoupledCalibrator",
        "HistogramBinning", "IsotonicCalibrator", "PassThroughCalibrator", "PlattScaling", "ReliabilityDiagram",
        "RiskCoverage", "ScoreCalibrator", "ShiftDiscount", "TemperatureScaling", "adaptive_calibration_error",
        "aurc", "auroc", "brier_score", "calibration_summary", "certify_pair", "certify_threshold", "eaurc",
        "expected_calibration_error", "fingerprint_model", "fit_artifact", "load_artifact",
        "maximum_calibration_error", "negative_log_likelihood", "reliability_diagram_data", "risk_coverage_curve",
        "save_artifact", "selective_accuracy",
    },
    "guardrail.policy": {
        "AbstainParams", "ActionSpec", "AttemptCondition", "Bound", "Budget", "CertifiedBound", "Condition",
        "EscalateParams", "FallbackParams", "FamiliarityThreshold", "FetchMoreViewsParams", "Policy", "ReAskParams",
        "Rule", "Threshold", "builtin_policy_names", "check_policy_file", "decide", "load_builtin_policy",
        "load_policy",
    },
    "guardrail.telemetry": {
        "CallTrace", "ConfiguredTelemetry", "OtelTelemetry", "Telemetry", "configure_telemetry", "default_telemetry",
    },
    "guardrail.integrations": {
        "Approve", "CallableViewProvider", "DirectAnswer", "Edit", "GuardSource", "GuardState", "GuardrailChatModel",
        "GuardrailMiddleware", "ImageStore", "PendingEscalation", "RecaptureProvider", "Reject", "ReviewDecision",
        "ReviewError", "ToolViewProvider", "add_guardrail_nodes", "aresume_escalation", "as_view_provider",
        "guardrail_graph", "list_escalations", "load_graph_factory", "messages_from_request", "open_saver",
        "parse_review", "pending_payload", "request_from_messages", "resolve_escalation", "resume_escalation",
    },
    "guardrail.training": {
        "CONFIDENCE_TOKENS", "CalibrationGRPOTrainer", "CalibrationOptions", "ConfidenceGRPOTrainer",
        "GRPORunConfig", "RewardTerms", "RewardWeights", "SCORE_TOKENS", "TrainCalibrationConfig", "batch_sigmoid_z",
        "extend_vocabulary", "harmonic_confidence", "load_config", "reward_functions", "reward_terms",
        "tar_advantages", "tar_weights", "train_calibration", "train_grpo", "visual_scores",
    },
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(SURFACES))
def test_surface_is_pinned(module: str) -> None:
    exported = set(importlib.import_module(module).__all__)
    expected = SURFACES[module]
    assert not expected - exported, f"{module} lost {sorted(expected - exported)}"
    # New public names are welcome, but must be added here on purpose.
    assert not exported - expected, f"{module} exports by accident? {sorted(exported - expected)}"


@pytest.mark.parametrize("module", sorted(SURFACES))
def test_every_exported_name_resolves(module: str) -> None:
    namespace = importlib.import_module(module)
    for name in namespace.__all__:
        assert getattr(namespace, name) is not None, f"{module}.{name}"


def test_lazy_exports_are_the_implementations() -> None:
    from guardrail.backends.transformers import TransformersBackend
    from guardrail.confidence.estimator import DecoupledEstimator

    assert guardrail.TransformersBackend is TransformersBackend
    assert guardrail.DecoupledEstimator is DecoupledEstimator
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        _ = guardrail.NotAThing


def test_import_guardrail_does_not_import_torch_or_transformers() -> None:
    code = "import sys, guardrail; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_error_is_a_guardrail_error() -> None:
    for name in guardrail.__all__:
        obj = getattr(guardrail, name)
        if isinstance(obj, type) and issubclass(obj, Warning):  # a warning is not raised: it is a UserWarning
            assert issubclass(obj, UserWarning), name
        elif isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, guardrail.GuardrailError), name
