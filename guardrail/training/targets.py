"""The absolute visual target: the guard's own calibrated visual confidence of a rollout (issue 30, item 1).

METHOD.md section 8 as written z-scores the probe statistic ``s`` over the batch and passes it through a sigmoid
(``tar.batch_sigmoid_z``): whatever the perception accuracy, that target averages 0.5, so a visual score trained
towards it cannot become calibrated. :class:`GuardVisualTarget` maps ``s`` instead through what the guard does at
inference time with a calibration artifact: ``s = w log(KL + eps) - log(H + eps)`` at the artifact's grounding
weight ``w``, the artifact's reference normalisation ``sigmoid((s - mean) / std)`` and its fitted visual calibrator,
which returns P(perception correct). The result is a probability on an absolute scale, the same for every batch.

What differs from the guard: the rollout is scored by the policy being trained (the model the guard will watch),
under one perturbed copy of the artifact's probe kind; the stability views (``stability_weight``) are not drawn
(eight more forward passes a step), so their fall counts as none, as the guard counts an unmeasured one; no shift
discount is applied (the training questions are calibration questions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..calibration.artifact import load_artifact
from ..calibration.decoupled import DecoupledCalibrator
from ..confidence import signals as sig
from ..confidence.normalization import VisualNormalization
from ..confidence.settings import ProbeSetting
from ..errors import ArtifactError

__all__ = ["GuardVisualTarget", "visual_statistic"]


def visual_statistic(
    logp: torch.Tensor, logq: torch.Tensor, vision: torch.Tensor, *, grounding_weight: float
) -> torch.Tensor:
    """``s = w log(KL + 1e-8) - log(H + 1e-8)`` of each rollout on its vision tokens: ``(B, T) x 3 -> (B,)``.

    ``tar.visual_scores`` at weight ``w``; NaN where a rollout has no vision token.
    """
    kl = sig.masked_mean(sig.sampled_token_kl(logp, logq), vision)
    h = sig.masked_mean(sig.surprisal(logp), vision)
    return sig.visual_score(kl, h, grounding_weight=grounding_weight)


@dataclass(frozen=True)
class GuardVisualTarget:
    """The guard's visual confidence as a function of the probe statistic: normalisation then calibrator.

    ``probe`` is the artifact's probe setting (the perturbation the statistic must be measured under, and ``w``).
    Build one with :meth:`from_artifact`.
    """

    normalization: VisualNormalization
    calibrator: DecoupledCalibrator
    probe: ProbeSetting

    @classmethod
    def from_artifact(cls, path: str | os.PathLike[str]) -> GuardVisualTarget:
        """Read a calibration artifact (``ArtifactError`` when it is missing or malformed)."""
        artifact = load_artifact(path)
        if artifact.visual_normalization is None:
            raise ArtifactError(f"{path}: the artifact has no visual normalisation, so its probe gives no target")
        return cls(artifact.visual_normalization, artifact.decoupled_calibrator(), artifact.estimator_setting.probe)

    @property
    def grounding_weight(self) -> float:
        """``w`` of the statistic the normalisation was fitted on."""
        return float(self.normalization.grounding_weight)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """Calibrated visual confidence ``(B,) -> (B,)`` in [0, 1] from statistics ``s``; NaN stays NaN."""
        s = scores.detach().double().cpu().numpy()
        known = np.isfinite(s)
        certainty = np.full(s.shape, np.nan)
        certainty[known] = [self.normalization.apply(float(x)) for x in s[known]]
        visual = self.calibrator.predict_components(certainty, None)["visual"]
        return torch.as_tensor(visual, dtype=scores.dtype, device=scores.device)
