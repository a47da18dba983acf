"""The public surface: what ``import guardrail`` exports is deliberate, and stays light."""

from __future__ import annotations

import subprocess
import sys

import guardrail

EXPECTED = {
    "Action", "ArtifactError", "AsyncBackend", "AsyncEstimator", "Attempt", "Backend", "BackendError",
    "BackendTimeout", "CalibrationError", "Calibrator", "Confidence", "ConfigurationError", "Decision",
    "ErrorInfo", "Escalation", "Estimator", "EstimatorError", "Generation", "GenerationOptions", "Guard",
    "GuardResult", "GuardrailError", "ImageBlock", "ImageError", "InputError", "Message", "OtelTelemetry",
    "PassThroughCalibrator", "Policy", "PolicyError", "PolicyProblem", "Request", "Signals", "Telemetry",
    "TextBlock", "Usage", "ViewProviderError", "WorkerLimitError", "configure_telemetry", "decide", "load_guard",
    "load_policy", "__version__",
}  # fmt: skip


def test_all_is_pinned() -> None:
    assert set(guardrail.__all__) >= EXPECTED, sorted(EXPECTED - set(guardrail.__all__))
    unexpected = set(guardrail.__all__) - EXPECTED
    # New public names are welcome, but must be added here on purpose.
    assert not unexpected, f"exported by accident? {sorted(unexpected)}"
    for name in guardrail.__all__:
        assert hasattr(guardrail, name), name


def test_import_guardrail_does_not_import_torch_or_transformers() -> None:
    code = "import sys, guardrail; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_error_is_a_guardrail_error() -> None:
    for name in guardrail.__all__:
        obj = getattr(guardrail, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, guardrail.GuardrailError), name
