"""Training a model to say how sure it is: GRPO with the reward and TAR of METHOD.md section 8, on TRL.

The reward (``reward``), the visual-certainty target and TAR (``tar``) and the vocabulary extension (``vocab``)
need only torch; the trainer (``trainer.CalibrationGRPOTrainer``) and ``train_calibration`` need the ``train``
extra (``pip install 'lvlm-guardrail[train]'``: TRL, peft, datasets) and are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .reward import RewardTerms, RewardWeights, harmonic_confidence, reward_functions, reward_terms
from .tar import batch_sigmoid_z, tar_advantages, tar_weights, visual_scores
from .train import TrainCalibrationConfig, load_config, train_calibration
from .vocab import CONFIDENCE_TOKENS, SCORE_TOKENS, extend_vocabulary

if TYPE_CHECKING:
    from .trainer import CalibrationGRPOTrainer, CalibrationOptions

__all__ = [
    "CONFIDENCE_TOKENS",
    "SCORE_TOKENS",
    "CalibrationGRPOTrainer",
    "CalibrationOptions",
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
    "visual_scores",
]


def __getattr__(name: str) -> Any:
    if name in ("CalibrationGRPOTrainer", "CalibrationOptions"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
