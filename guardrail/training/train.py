"""Deprecated: the former name of :mod:`guardrail.training.run` (one GRPO training run), kept for one release."""

from __future__ import annotations

import warnings

from .run import (
    DEFAULT_INSTRUCTION,
    GRPORunConfig,
    TrainCalibrationConfig,
    build_dataset,
    build_dataset_from_items,
    build_trainer,
    load_config,
    precision_defaults,
    train_calibration,
    train_grpo,
)

__all__ = [
    "DEFAULT_INSTRUCTION",
    "GRPORunConfig",
    "TrainCalibrationConfig",
    "build_dataset",
    "build_dataset_from_items",
    "build_trainer",
    "load_config",
    "precision_defaults",
    "train_calibration",
    "train_grpo",
]

warnings.warn(
    "guardrail.training.train is deprecated and will be removed in the next release; import from "
    "guardrail.training.run (or guardrail.training) instead",
    DeprecationWarning,
    stacklevel=2,
)
