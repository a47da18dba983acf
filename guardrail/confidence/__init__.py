"""Confidence signals: span parsing, image perturbations and the decoupled estimator.

Span parsing is plain Python and imported eagerly; the torch-based parts (perturbations, signals, the
estimator) are imported lazily, on first use, so that ``import guardrail`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import AsyncEstimator, Estimator
from .normalization import VisualNormalization
from .spans import ParsedResponse, char_span_to_token_span, parse_boxed, parse_response

if TYPE_CHECKING:
    from .blackbox import AgreementEstimator
    from .estimator import DecoupledEstimator, ScoringBackend, TeacherForcedScores
    from .perturb import PerturbationKind, perturb_image

__all__ = [
    "AgreementEstimator",
    "AsyncEstimator",
    "DecoupledEstimator",
    "Estimator",
    "ParsedResponse",
    "PerturbationKind",
    "ScoringBackend",
    "TeacherForcedScores",
    "VisualNormalization",
    "char_span_to_token_span",
    "parse_boxed",
    "parse_response",
    "perturb_image",
]

_LAZY = {
    "AgreementEstimator": ".blackbox",
    "DecoupledEstimator": ".estimator",
    "ScoringBackend": ".estimator",
    "TeacherForcedScores": ".estimator",
    "PerturbationKind": ".perturb",
    "perturb_image": ".perturb",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
