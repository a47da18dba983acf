"""Choose the stability probe on labelled calibration rows: its views' family, how many, and how much they count.

The stability probe (``confidence.stability``) scores an answer under K views of the image that must not change
it, and lowers the visual statistic by ``l`` times the percept's fall under them: ``s' = s - l D``. Which family
of views, which K and which ``l`` rank perception errors best is an empirical question about a model and its
images, so calibration answers it on the calibration rows, as it chooses the probe's perturbation
(``perturbation_choice``):

1. each family's views are scored once at the largest K (``STABILITY_COUNTS``), teacher-forced on the rows' own
   answers; a smaller K is the first views of that family, and ``mixed`` takes the families' views in turn, so no
   further pass is needed;
2. every (family, K, l) is ranked by its s' against perception correctness, **within each group** of rows (the
   rows' corruption kind where the data say it, else all rows as one group), averaged over the groups: a probe
   that only separates one kind of damage from another gains nothing; it must rank errors within a kind, which is
   what an unseen kind of damage asks of it;
3. the best wins, but the fewest views within ``COUNT_TOLERANCE`` of it are taken (each view is one more row in
   the scoring pass), and the probe stays off unless it beats the statistic without it by that much.

Everything measured goes into the artifact (``info["stability_choice"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from array_api_compat import torch as torch_xp
from scipy.stats import rankdata

from ..backends.base import Backend, ScoringBackend
from ..confidence.probe import answer_masks
from ..confidence.stability import STABILITY_FAMILIES, StabilitySetting, stability_views, view_falls
from ..responses import parse_response
from .collect import ScoredItem
from .metrics import auroc

__all__ = [
    "COUNT_TOLERANCE",
    "STABILITY_COUNTS",
    "STABILITY_WEIGHTS",
    "StabilityChoice",
    "choose_stability",
    "row_group",
]

STABILITY_COUNTS: tuple[int, ...] = (2, 4, 8)
"""The numbers of views tried."""
STABILITY_WEIGHTS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
"""The weights ``l`` of the percept's fall (nats per token) in ``s' = s - l D`` tried."""
COUNT_TOLERANCE = 0.002
"""A setting with fewer views is taken while its score is within this of the best; the probe must beat the
statistic without it by this much to be switched on."""
_BASE_FAMILIES = tuple(f for f in STABILITY_FAMILIES if f != "mixed")

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class StabilityChoice:
    """The chosen views (``count`` 0: off) and weight, each candidate's score, and why."""

    chosen: StabilitySetting
    weight: float
    scores: dict[str, float | None]
    baseline: float | None
    n: int
    groups: int
    reason: str

    def as_info(self) -> dict[str, Any]:
        """A JSON-ready record for the artifact."""
        return {
            "chosen": self.chosen.label,
            "weight": self.weight,
            "mean_group_auroc_perception": self.scores,
            "without": self.baseline,
            "n": self.n,
            "groups": self.groups,
            "reason": self.reason,
        }


def row_group(row: ScoredItem) -> str | None:
    """The group a calibration row belongs to for choosing and cross-fitting: its corruption kind (``clean`` at
    severity 0), or ``None`` where its item does not say (data without corruption tags form one group)."""
    kind = row.item.tags.get("corruption")
    if kind is None:
        return None
    severity = row.item.tags.get("severity")
    return "clean" if severity is not None and int(severity) == 0 else str(kind)


def _mean_group_auroc(values: FloatArray, labels: FloatArray, groups: Sequence[str | None]) -> float | None:
    """AUROC of ``values`` for ``labels`` within each group that holds both classes, averaged over those groups."""
    names = np.array(["" if g is None else g for g in groups])
    out = []
    for group in np.unique(names):
        inside = (names == group) & ~np.isnan(values) & ~np.isnan(labels)
        y = labels[inside]
        if len(set(y.tolist())) < 2:
            continue
        ranks = rankdata(values[inside]) - 1.0  # ties share their mean rank, as AUROC counts them half
        out.append(float(auroc(ranks / max(1.0, ranks.size - 1.0), y)))
    return float(np.mean(out)) if out else None


def _falls(
    backend: ScoringBackend, rows: Sequence[ScoredItem], family: str, count: int, seed: int, on_item: Any
) -> FloatArray:
    """``(rows, count)``: each row's percept fall under each of ``count`` views of ``family`` (NaN: not measured)."""
    setting = StabilitySetting(family=family, count=count, seed=seed)
    out = np.full((len(rows), count), np.nan)
    for i, row in enumerate(rows):
        generation = row.generation
        assert generation is not None
        parsed = parse_response(generation.text)
        masks, _ = answer_masks(parsed, backend.token_offsets, generation.token_ids, xp=torch_xp)
        images = backend.model_images(row.item.request)
        if images and bool(masks.vision.any()):
            views = stability_views(images, setting)
            scores = backend.score(row.item.request, generation.token_ids, views)
            logq = scores.token_logprobs[1:]
            out[i] = view_falls(scores.token_logprobs[0], logq, masks.vision).to(torch.float64).numpy()
        if on_item is not None:
            on_item(row)
    return out


def choose_stability(
    backend: Backend,
    rows: Sequence[ScoredItem],
    *,
    grounding_weight: float,
    seed: int = 0,
    counts: Sequence[int] = STABILITY_COUNTS,
    weights: Sequence[float] = STABILITY_WEIGHTS,
    max_rows: int = 1000,
    min_per_class: int = 20,
    on_item: Callable[[ScoredItem], None] | None = None,
) -> StabilityChoice:
    """The stability probe's views and weight that rank perception errors best on (a sample of) ``rows``, whose
    signals were measured with the chosen visual probe at ``grounding_weight`` (see the module docstring).

    Off (count 0) when the backend cannot re-score, when fewer than ``min_per_class`` correct or wrong perceptions
    are labelled, or when no setting beats the statistic without the probe by ``COUNT_TOLERANCE``.
    """
    from ..confidence.probe import visual_statistic

    off = StabilitySetting(seed=seed)
    usable = [
        r
        for r in rows
        if r.generation is not None
        and r.generation.token_ids
        and r.signals is not None
        and r.error is None
        and r.perception_correct is not None
    ]
    if len(usable) > max_rows:
        picked = np.sort(np.random.default_rng(seed).choice(len(usable), size=max_rows, replace=False))
        usable = [usable[i] for i in picked]
    wrong = sum(not r.perception_correct for r in usable)
    if not isinstance(backend, ScoringBackend):
        return StabilityChoice(off, 0.0, {}, None, len(usable), 0, "the backend cannot re-score answers")
    if min(wrong, len(usable) - wrong) < min_per_class:
        reason = (
            f"{len(usable)} rows with a perception label, {wrong} of them wrong: fewer than {min_per_class} of a "
            "class to choose from, so the stability probe stays off"
        )
        return StabilityChoice(off, 0.0, {}, None, len(usable), 0, reason)
    labels = np.array([float(bool(r.perception_correct)) for r in usable])
    groups = [row_group(r) for r in usable]
    statistic = np.array(
        [np.nan if (v := visual_statistic(r.signals.features, grounding_weight)) is None else v for r in usable]  # type: ignore[union-attr]
    )
    top = max(counts)
    falls = {family: _falls(backend, usable, family, top, seed, on_item) for family in _BASE_FAMILIES}
    baseline = _mean_group_auroc(statistic, labels, groups)
    scores: dict[str, float | None] = {}
    candidates: list[tuple[StabilitySetting, float]] = []
    for family in STABILITY_FAMILIES:
        for count in sorted(counts):
            if family == "mixed":  # view 3j + i is view j of base family i
                columns = [falls[_BASE_FAMILIES[k % 3]][:, k // 3] for k in range(count)]
                drop = np.mean(np.stack(columns, axis=1), axis=1)
            else:
                drop = np.mean(falls[family][:, :count], axis=1)
            setting = StabilitySetting(family=family, count=count, seed=seed)
            for weight in weights:
                scores[f"{setting.label} l={weight:g}"] = _mean_group_auroc(statistic - weight * drop, labels, groups)
                candidates.append((setting, weight))
    known = [(scores[f"{s.label} l={w:g}"], s, w) for s, w in candidates]
    ranked = [(v, s, w) for v, s, w in known if v is not None]
    n_groups = len(set(groups))
    if not ranked or baseline is None:
        return StabilityChoice(off, 0.0, scores, baseline, len(usable), n_groups, "no setting could be ranked")
    best = max(v for v, _, _ in ranked)
    if best < baseline + COUNT_TOLERANCE:
        reason = f"no setting beats the statistic without the probe ({baseline:.3f}) by {COUNT_TOLERANCE}"
        return StabilityChoice(off, 0.0, scores, baseline, len(usable), n_groups, reason)
    value, setting, weight = min(
        ((v, s, w) for v, s, w in ranked if v >= best - COUNT_TOLERANCE), key=lambda t: (t[1].count, -t[0])
    )
    reason = (
        f"mean AUROC for perception within {n_groups} groups of {len(usable)} calibration rows {value:.3f} "
        f"(best {best:.3f}, without the probe {baseline:.3f}); the fewest views within {COUNT_TOLERANCE} of the best"
    )
    return StabilityChoice(setting, weight, scores, baseline, len(usable), n_groups, reason)
