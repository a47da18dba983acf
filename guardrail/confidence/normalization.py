"""Visual normalisation (METHOD.md section 3, step 6): sigmoid((s - mean) / std) with reference statistics.

The paper z-scores the raw visual score s over a batch of rollouts; a single answer at inference time has no
batch, so the mean and std of s are measured once on a calibration split, stored in the calibration artifact,
and applied to every answer. Plain Python (no torch), so that artifacts load without the model stack.

The statistic itself is ``s = w log(KL + eps) - log(H + eps)``: the paper's is ``w = 1``. How much the grounding
KL should count against the certainty H is a property of a model and its images, so calibration may choose a
smaller ``w`` on its labelled rows (``guardrail.calibration.perturbation_choice``) and stores it here, beside the
statistics of the s it chose; artifacts written before keep the paper's ``w = 1``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import CalibrationError

__all__ = ["VisualNormalization"]


class VisualNormalization(BaseModel):
    """Reference statistics of the raw visual score s; ``apply`` maps s to a visual certainty in (0, 1).

    The default (0, 1) is an un-fitted identity z-score: usable for ranking, not a calibrated scale.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float = Field(default=0.0, allow_inf_nan=False)
    std: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    grounding_weight: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """``w`` in ``s = w log(KL + eps) - log(H + eps)``: 1 is the paper's statistic, 0 the certainty H alone."""
    stability_weight: float = Field(default=0.0, ge=0.0, le=100.0, allow_inf_nan=False)
    """How much the answer's fall under the stability probe's views lowers s (``confidence.stability``); 0, the
    default and that of artifacts written before the probe, leaves s as it was."""

    @classmethod
    def fit(
        cls, scores: Iterable[float | None], *, grounding_weight: float = 1.0, stability_weight: float = 0.0
    ) -> VisualNormalization:
        """Mean and population std of the measured scores (``None`` and NaN mean "not measured" and are skipped),
        which were computed with ``grounding_weight`` and ``stability_weight``."""
        values: list[float] = []
        for i, score in enumerate(scores):
            if score is None or math.isnan(score):
                continue
            if math.isinf(score):
                raise CalibrationError(f"`scores[{i}]` must be a finite number, got {score}")
            values.append(float(score))
        if len(values) < 2:
            raise CalibrationError(f"`scores` must hold at least 2 finite values to fit, got {len(values)}")
        std = statistics.pstdev(values)
        if not std > 0:
            raise CalibrationError("`scores` are all equal: their spread (std) is 0, nothing to normalise by")
        return cls(
            mean=statistics.fmean(values),
            std=std,
            grounding_weight=grounding_weight,
            stability_weight=stability_weight,
        )

    def apply(self, score: float) -> float:
        """The visual certainty ``sigmoid((score - mean) / std)``, computed without overflow."""
        z = (score - self.mean) / self.std
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
