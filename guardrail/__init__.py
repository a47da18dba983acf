"""guardrail: the confidence guardrail for multimodal agents.

Wraps vision-language model calls, measures decoupled calibrated confidence (what the model saw, what it
reasoned), and applies a YAML policy when confidence is low.
"""

from __future__ import annotations

from ._version import __version__
from .backends import AsyncBackend, Backend
from .calibration import Calibrator, PassThroughCalibrator
from .confidence.base import AsyncEstimator, Estimator
from .errors import (
    ArtifactError,
    BackendError,
    BackendTimeout,
    CalibrationError,
    ConfigurationError,
    EstimatorError,
    GuardrailError,
    ImageError,
    InputError,
    PolicyError,
    PolicyProblem,
    ViewProviderError,
    WorkerLimitError,
)
from .guard import Guard
from .policy.engine import decide
from .policy.loader import load_policy
from .policy.schema import Policy
from .pretrained import load_guard
from .telemetry import OtelTelemetry, Telemetry, configure_telemetry
from .types import (
    Action,
    Attempt,
    Confidence,
    Decision,
    ErrorInfo,
    Escalation,
    Generation,
    GenerationOptions,
    GuardResult,
    ImageBlock,
    Message,
    Request,
    Signals,
    TextBlock,
    Usage,
)

__all__ = [
    "Action",
    "ArtifactError",
    "AsyncBackend",
    "AsyncEstimator",
    "Attempt",
    "Backend",
    "BackendError",
    "BackendTimeout",
    "CalibrationError",
    "Calibrator",
    "Confidence",
    "ConfigurationError",
    "Decision",
    "ErrorInfo",
    "Escalation",
    "Estimator",
    "EstimatorError",
    "Generation",
    "GenerationOptions",
    "Guard",
    "GuardResult",
    "GuardrailError",
    "ImageBlock",
    "ImageError",
    "InputError",
    "Message",
    "OtelTelemetry",
    "PassThroughCalibrator",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "Request",
    "Signals",
    "Telemetry",
    "TextBlock",
    "Usage",
    "ViewProviderError",
    "WorkerLimitError",
    "__version__",
    "configure_telemetry",
    "decide",
    "load_guard",
    "load_policy",
]
