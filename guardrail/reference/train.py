"""Deprecated: the former name of :mod:`guardrail.reference.supervised` (the reference model's supervised training
run), kept for one release."""

from __future__ import annotations

import warnings

from .supervised import (
    Progress,
    TrainConfig,
    TrainResult,
    corrupt_some,
    save_trained,
    train_reference,
    training_examples,
)

__all__ = [
    "Progress",
    "TrainConfig",
    "TrainResult",
    "corrupt_some",
    "save_trained",
    "train_reference",
    "training_examples",
]

warnings.warn(
    "guardrail.reference.train is deprecated and will be removed in the next release; import from "
    "guardrail.reference.supervised instead",
    DeprecationWarning,
    stacklevel=2,
)
