"""The collapse alarm (issue 30, item 3): warn when the stated confidences stop differing.

Trained with METHOD.md section 8's reward as written, every model ended up writing one constant score: its spread
fell to zero while the reward kept rising. :func:`stated_spread` measures, over one step's rollouts, the standard
deviation of the stated overall confidences and the share of them at the ceiling (1.0); :class:`CollapseAlarm` is
told each step's spread and fires (a :class:`ConfidenceCollapseWarning` and a log line) once the spread has stayed
below ``threshold`` for ``patience`` steps in a row. It fires once per collapse: it re-arms when the spread rises
above the threshold again.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import torch

__all__ = ["CollapseAlarm", "ConfidenceCollapseWarning", "stated_spread"]

logger = logging.getLogger("guardrail.training")


class ConfidenceCollapseWarning(UserWarning):
    """The stated confidences of a training run have (nearly) stopped differing."""


def stated_spread(confidence: torch.Tensor) -> tuple[float, float]:
    """``(std, share at the ceiling)`` of the stated confidences ``(N,)`` (NaN: not stated, left out).

    Population std; ``(nan, nan)`` when none was stated. The ceiling is 1.0 (both scores 10).
    """
    stated = confidence[~torch.isnan(confidence)].double()
    if stated.numel() == 0:
        return math.nan, math.nan
    return float(stated.std(unbiased=False)), float((stated >= 1.0 - 1e-9).double().mean())


@dataclass
class CollapseAlarm:
    """Counts consecutive steps whose spread is below ``threshold``; fires at ``patience`` of them.

    A step with no stated confidence (NaN spread) counts as collapsed: a model that stopped writing scores has no
    spread either.
    """

    threshold: float = 0.05
    patience: int = 10
    low_steps: int = field(default=0, init=False)
    fired_at: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"`threshold` must be a finite number >= 0, got {self.threshold}")
        if self.patience < 1:
            raise ValueError(f"`patience` must be an int >= 1, got {self.patience}")

    def update(self, spread: float, step: int) -> bool:
        """Record one step's spread; ``True`` (after warning and logging) when the alarm fires at this step."""
        if math.isnan(spread) or spread < self.threshold:
            self.low_steps += 1
        else:
            self.low_steps = 0
            return False
        if self.low_steps != self.patience:
            return False
        self.fired_at.append(step)
        message = (
            f"stated confidence collapsing: its spread (std) has stayed below {self.threshold} for {self.patience} "
            f"steps (step {step}, last {spread:.4f}); the model is writing (nearly) one score whatever it answers"
        )
        logger.warning(message)
        warnings.warn(message, ConfidenceCollapseWarning, stacklevel=2)
        return True
