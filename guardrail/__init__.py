"""guardrail: the confidence guardrail for multimodal agents.

Wraps vision-language model calls, measures decoupled calibrated confidence (what the model saw, what it
reasoned), and applies a YAML policy when confidence is low.

Everything a user names is importable from here. The concrete backends and estimators (``TransformersBackend``,
``OpenAICompatibleBackend``, ``LangChainBackend``, ``DecoupledEstimator``, ``AgreementEstimator``) are imported
lazily, on first use, so that ``import guardrail`` loads neither torch nor transformers nor openai. The light
install (``pip install lvlm-guardrail``) has no torch: ``TransformersBackend`` and ``DecoupledEstimator`` then raise
an ImportError naming the ``local`` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._extras import needs
from ._version import __version__
from .backends.base import AsyncBackend, Backend, BatchBackend, ScoringBackend, TextScoringBackend
from .calibration.artifact import CalibrationArtifact, load_artifact
from .calibration.base import Calibrator, PassThroughCalibrator
from .confidence.base import AsyncEstimator, BatchEstimator, Estimator
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
    UncalibratedWarning,
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
    Component,
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
    Status,
    TextBlock,
    Usage,
)
from .views import ViewProvider, ZoomProvider

if TYPE_CHECKING:
    from .backends.langchain import LangChainBackend
    from .backends.openai import OpenAICompatibleBackend
    from .backends.transformers import TransformersBackend
    from .confidence.blackbox import AgreementEstimator
    from .confidence.estimator import DecoupledEstimator

__all__ = [
    "Action",
    "AgreementEstimator",
    "ArtifactError",
    "AsyncBackend",
    "AsyncEstimator",
    "Attempt",
    "Backend",
    "BackendError",
    "BackendTimeout",
    "BatchBackend",
    "BatchEstimator",
    "CalibrationArtifact",
    "CalibrationError",
    "Calibrator",
    "Component",
    "Confidence",
    "ConfigurationError",
    "Decision",
    "DecoupledEstimator",
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
    "LangChainBackend",
    "Message",
    "OpenAICompatibleBackend",
    "OtelTelemetry",
    "PassThroughCalibrator",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "Request",
    "ScoringBackend",
    "Signals",
    "Status",
    "Telemetry",
    "TextBlock",
    "TextScoringBackend",
    "TransformersBackend",
    "UncalibratedWarning",
    "Usage",
    "ViewProvider",
    "ViewProviderError",
    "WorkerLimitError",
    "ZoomProvider",
    "__version__",
    "configure_telemetry",
    "decide",
    "load_artifact",
    "load_guard",
    "load_policy",
]

_LAZY = {
    "TransformersBackend": ".backends.transformers",
    "OpenAICompatibleBackend": ".backends.openai",
    "LangChainBackend": ".backends.langchain",
    "DecoupledEstimator": ".confidence.estimator",
    "AgreementEstimator": ".confidence.blackbox",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        with needs("local", name):  # TransformersBackend, DecoupledEstimator: torch, in process
            return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
