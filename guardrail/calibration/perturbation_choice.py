"""Choose the visual probe's perturbation on labelled calibration rows (a project decision; METHOD.md section 3).

The paper blackens 14-px patches with probability 0.8 on images hundreds of pixels wide. On a small image the
fifth of the patches left visible decides, draw by draw, whether the object is still in view, and the grounding
KL then measures the luck of the draw more than the model's reliance on the image. Which probe ranks perception
errors best is an empirical question about a model and its images, so calibration answers it on the calibration
split: every candidate re-scores the *same* answers (teacher-forced, no new generation), and the candidate whose
statistic s ranks perception correctness best (AUROC) is kept. The paper's setting comes first and wins ties; it
is also kept, with the reason, when the data have too few perception labels to choose. The whole table goes into
the artifact, so the choice can be audited.

The same rows also choose how much the grounding KL counts in ``s = w log(KL + eps) - log(H + eps)``
(``GROUNDING_WEIGHTS``, the paper's ``w = 1`` first): each weight re-weighs the measured KL and H, so no re-scoring
is needed. On the reference model the KL of the perceived tokens hardly ranks perception errors beyond what their
certainty H already does, and a smaller weight ranks them better on corruption families calibration never saw
(docs/figures.md, "Off the calibration data").

The setting itself (:class:`ProbeSetting`, :data:`PAPER_DEFAULT`) is typed in ``guardrail.confidence.settings``,
beside the estimator that runs it; both are re-exported here as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..confidence.normalization import VisualNormalization
from ..confidence.probe import visual_statistic
from ..confidence.settings import PAPER_DEFAULT, ProbeSetting
from .collect import ScoredItem, remeasure, scored_arrays
from .metrics import auroc

__all__ = [
    "CANDIDATES",
    "GROUNDING_WEIGHTS",
    "PAPER_DEFAULT",
    "PerturbationChoice",
    "ProbeSetting",
    "best_setting",
    "choose_perturbation",
    "reweigh",
]


CANDIDATES: tuple[ProbeSetting, ...] = (
    PAPER_DEFAULT,
    ProbeSetting(blackout_probability=1.0),  # every patch: the image removed, as in the paper's unanswerable test
    ProbeSetting(perturbation="noise"),
    ProbeSetting(perturbation="grey"),
    ProbeSetting(perturbation="blur"),
)
"""The paper's default first (it wins ties), then its code's alternatives and the whole-image blackout."""
GROUNDING_WEIGHTS: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1)
"""The weights of the grounding KL in s tried for every candidate: the paper's first (it wins ties). Never 0: an
answer that does not depend on the image at all (KL 0, e.g. an image that is already black) must always lose
visual confidence, however certain its perception tokens are."""


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


def _perception_auroc(rows: Sequence[ScoredItem], grounding_weight: float) -> float | None:
    """AUROC of s at ``grounding_weight`` (re-weighed from the measured KL and H) for perception correctness;
    None without both classes."""
    y = scored_arrays(rows)["perception_correct"]
    s = np.array(
        [np.nan if r.signals is None else _statistic(r.signals.features, grounding_weight) for r in rows], dtype=float
    )
    keep = ~np.isnan(s) & ~np.isnan(y)
    if len(set(y[keep].tolist())) < 2:
        return None
    values = s[keep]
    rank = np.searchsorted(np.sort(values), values, side="left")  # s is unbounded; ranks (ties equal) are not
    return float(auroc(rank / max(1, values.size - 1), y[keep]))


def _statistic(features: Mapping[str, float], grounding_weight: float) -> float:
    value = visual_statistic(features, grounding_weight)
    return np.nan if value is None else value


def reweigh(rows: Sequence[ScoredItem], grounding_weight: float) -> list[ScoredItem]:
    """The rows with s re-weighed to ``grounding_weight`` from their measured KL and H (no re-scoring).

    The visual certainty is that of the un-fitted normalisation of this weight, as a fresh estimator of the
    setting would report it; calibration fits the normalisation afterwards.
    """
    normalization = VisualNormalization(grounding_weight=grounding_weight)
    out = []
    for row in rows:
        s = None if row.signals is None else visual_statistic(row.signals.features, grounding_weight)
        out.append(row if s is None else row.with_visual(s, normalization))
    return out


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
    """The candidate, and its grounding weight of ``GROUNDING_WEIGHTS``, whose s ranks perception correctness best
    on (a sample of) ``rows``, drawn with ``seed``.

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
    weighted: list[ProbeSetting] = []
    for setting in candidates:
        if measured_with is not None and setting.weighted(1.0) == measured_with.weighted(1.0):  # KL, H: any w
            measured = usable
        else:
            measured = remeasure(backend, setting.estimator(draws=draws), usable, on_item=on_item)
        for weight in GROUNDING_WEIGHTS:
            weighted.append(setting.weighted(weight))
            scores[weighted[-1].label] = _perception_auroc(measured, weight)
    chosen = best_setting(scores, weighted)
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
