"""Confidence signals: span parsing, image perturbations and the decoupled estimator."""

from .base import Estimator

__all__ = ["Estimator"]
