"""Training a model to say how sure it is: GRPO with the reward and TAR of METHOD.md section 8, on TRL.

The reward (``reward``), the visual-certainty target and TAR (``tar``) and the vocabulary extension (``vocab``)
need only torch; the trainer (``trainer.ConfidenceGRPOTrainer``) and a run (``run``: ``GRPORunConfig``,
``train_grpo``) need the ``train`` extra (``pip install 'lvlm-guardrail[train]'``: TRL, peft, datasets) and are
imported lazily. ``CalibrationGRPOTrainer``, ``TrainCalibrationConfig`` and ``train_calibration`` are their former
names, kept for one release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .reward import RewardTerms, RewardWeights, harmonic_confidence, reward_functions, reward_terms
from .run import GRPORunConfig, TrainCalibrationConfig, load_config, train_calibration, train_grpo
from .tar import batch_sigmoid_z, tar_advantages, tar_weights, visual_scores
from .vocab import CONFIDENCE_TOKENS, SCORE_TOKENS, extend_vocabulary

if TYPE_CHECKING:
    from .trainer import CalibrationGRPOTrainer, CalibrationOptions, ConfidenceGRPOTrainer

__all__ = [
    "CONFIDENCE_TOKENS",
    "SCORE_TOKENS",
    "CalibrationGRPOTrainer",
    "CalibrationOptions",
    "ConfidenceGRPOTrainer",
    "GRPORunConfig",
    "RewardTerms",
    "RewardWeights",
    "TrainCalibrationConfig",
    "batch_sigmoid_z",
    "extend_vocabulary",
    "harmonic_confidence",
    "load_config",
    "reward_functions",
    "reward_terms",
    "tar_advantages",
    "tar_weights",
    "train_calibration",
    "train_grpo",
    "visual_scores",
]


def __getattr__(name: str) -> Any:
    if name in ("CalibrationGRPOTrainer", "CalibrationOptions", "ConfidenceGRPOTrainer"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
