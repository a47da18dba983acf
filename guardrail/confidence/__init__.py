"""Confidence signals: the estimators, their probe, image perturbations and the familiarity reference.

The protocols and the plain-Python parts are imported eagerly; the torch-based parts (the estimators,
perturbations) lazily, on first use, so that ``import guardrail`` does not load torch. The structured response
the estimators parse is ``guardrail.responses``; the backend contracts they call are ``guardrail.backends.base``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._extras import needs
from .base import AsyncEstimator, BatchEstimator, Estimator
from .familiarity import FamiliarityReference
from .normalization import VisualNormalization

if TYPE_CHECKING:
    from .blackbox import AgreementEstimator
    from .estimator import DecoupledEstimator
    from .perturb import PerturbationKind, perturb_image

__all__ = [
    "AgreementEstimator",
    "AsyncEstimator",
    "BatchEstimator",
    "DecoupledEstimator",
    "Estimator",
    "FamiliarityReference",
    "PerturbationKind",
    "VisualNormalization",
    "perturb_image",
]

_LAZY = {
    "AgreementEstimator": ".blackbox",
    "DecoupledEstimator": ".estimator",
    "PerturbationKind": ".perturb",
    "perturb_image": ".perturb",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        with needs("local", name):  # TransformersBackend, DecoupledEstimator: torch, in process
            return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
