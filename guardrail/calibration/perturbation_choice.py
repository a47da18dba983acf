"""Choose the visual probe's perturbation on labelled calibration rows (a project decision; METHOD.md section 3).

The paper blackens 14-px patches with probability 0.8 on images hundreds of pixels wide. On a small image the
fifth of the patches left visible decides, draw by draw, whether the object is still in view, and the grounding
KL then measures the luck of the draw more than the model's reliance on the image. Which probe ranks perception
errors best is an empirical question about a model and its images, so calibration answers it on the calibration
split: every candidate re-scores the *same* answers (teacher-forced, no new generation), and the candidate whose
statistic s ranks perception correctness best (AUROC) is kept. The paper's setting comes first and wins ties; it
is also kept, with the reason, when the data have too few perception labels to choose. The whole table goes into
the artifact, so the choice can be audited.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.base import Backend
from ..confidence.familiarity import FamiliarityReference
from ..confidence.normalization import VisualNormalization
from ..confidence.perturb import PerturbationKind
from .collect import ScoredItem, remeasure, scored_arrays
from .metrics import auroc

if TYPE_CHECKING:
    from ..confidence.estimator import DecoupledEstimator

__all__ = [
    "CANDIDATES",
    "PAPER_DEFAULT",
    "PerturbationChoice",
    "ProbeSetting",
    "best_setting",
    "choose_perturbation",
]


@dataclass(frozen=True)
class ProbeSetting:
    """One perturbation of the visual probe: its kind and, for ``blackout``, the chance a patch is blackened."""

    perturbation: PerturbationKind = "blackout"
    blackout_probability: float = 0.8

    @property
    def label(self) -> str:
        """A short name: ``blackout(p=0.8)``, ``noise``."""
        if self.perturbation == "blackout":
            return f"blackout(p={self.blackout_probability:g})"
        return self.perturbation

    def as_info(self) -> dict[str, Any]:
        """The estimator settings as stored in an artifact's ``info["estimator"]``."""
        return {"perturbation": self.perturbation, "blackout_probability": self.blackout_probability}

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ProbeSetting:
        """The setting recorded by :meth:`as_info`; missing keys take the paper's default."""
        return cls(
            perturbation=info.get("perturbation", PAPER_DEFAULT.perturbation),
            blackout_probability=float(info.get("blackout_probability", PAPER_DEFAULT.blackout_probability)),
        )

    def estimator(
        self,
        *,
        draws: int = 1,
        normalization: VisualNormalization | None = None,
        familiarity: FamiliarityReference | None = None,
    ) -> DecoupledEstimator:
        """A decoupled estimator probing with this setting (the default normalisation unless one is given)."""
        from ..confidence.estimator import DecoupledEstimator

        return DecoupledEstimator(
            draws=draws,
            perturbation=self.perturbation,
            blackout_probability=self.blackout_probability,
            normalization=normalization,
            familiarity=familiarity,
        )


PAPER_DEFAULT: ProbeSetting = ProbeSetting("blackout", 0.8)
CANDIDATES: tuple[ProbeSetting, ...] = (
    PAPER_DEFAULT,
    ProbeSetting("blackout", 1.0),  # every patch: the image removed, as in the paper's unanswerable test
    ProbeSetting("noise"),
    ProbeSetting("grey"),
    ProbeSetting("blur"),
)
"""The paper's default first (it wins ties), then its code's alternatives and the whole-image blackout."""


@dataclass(frozen=True)
class PerturbationChoice:
    """The chosen setting, the AUROC of s for perception correctness of every candidate, and why."""

    chosen: ProbeSetting
    auroc: dict[str, float | None]
    n: int
    reason: str

    def as_info(self) -> dict[str, Any]:
        """A JSON-ready record for the artifact."""
        return {"chosen": self.chosen.label, "auroc_perception": self.auroc, "n": self.n, "reason": self.reason}


def _perception_auroc(rows: Sequence[ScoredItem]) -> float | None:
    """AUROC of the visual score (a monotone map of s) for perception correctness; None without both classes."""
    columns = scored_arrays(rows)
    visual, y = columns["visual"], columns["perception_correct"]
    keep = ~np.isnan(visual) & ~np.isnan(y)
    if len(set(y[keep].tolist())) < 2:
        return None
    return float(auroc(visual[keep], y[keep]))


def choose_perturbation(
    backend: Backend,
    rows: Sequence[ScoredItem],
    *,
    draws: int = 1,
    seed: int = 0,
    measured_with: ProbeSetting | None = None,
    candidates: Sequence[ProbeSetting] = CANDIDATES,
    max_rows: int = 1000,
    min_per_class: int = 20,
    on_item: Callable[[ScoredItem], None] | None = None,
) -> PerturbationChoice:
    """The candidate whose s ranks perception correctness best on (a sample of) ``rows``, drawn with ``seed``.

    Only rows with an answer and a perception label take part; with fewer than ``min_per_class`` correct or
    wrong perceptions among them the first candidate (the paper's default) is returned without re-scoring.
    ``measured_with`` names the setting (at ``draws``) the rows' signals were already measured with: that
    candidate is ranked on them instead of being re-scored.
    """
    if not candidates:
        raise ValueError("`candidates` must name at least one perturbation setting")
    usable = [r for r in rows if r.generation is not None and r.error is None and r.perception_correct is not None]
    if len(usable) > max_rows:
        picked = np.sort(np.random.default_rng(seed).choice(len(usable), size=max_rows, replace=False))
        usable = [usable[i] for i in picked]
    wrong = sum(not r.perception_correct for r in usable)
    if min(wrong, len(usable) - wrong) < min_per_class:
        reason = (
            f"{len(usable)} rows with a perception label, {wrong} of them wrong: fewer than {min_per_class} of a "
            f"class to choose from, so the paper's default is kept"
        )
        return PerturbationChoice(candidates[0], {}, len(usable), reason)
    scores: dict[str, float | None] = {}
    for setting in candidates:
        if setting == measured_with:
            measured = usable
        else:
            measured = remeasure(backend, setting.estimator(draws=draws), usable, on_item=on_item)
        scores[setting.label] = _perception_auroc(measured)
    chosen = best_setting(scores, candidates)
    if chosen is None:
        return PerturbationChoice(candidates[0], scores, len(usable), "no candidate could be ranked")
    reason = (
        f"highest AUROC of s for perception correctness on {len(usable)} calibration rows ({scores[chosen.label]:.3f})"
    )
    return PerturbationChoice(chosen, scores, len(usable), reason)


def best_setting(scores: dict[str, float | None], candidates: Sequence[ProbeSetting]) -> ProbeSetting | None:
    """The candidate with the highest finite score, the earliest on ties; ``None`` if none has one."""
    best: ProbeSetting | None = None
    for setting in candidates:
        value = scores.get(setting.label)
        if value is None or not math.isfinite(value):
            continue
        top = None if best is None else scores[best.label]
        if top is None or value > top:
            best = setting
    return best
