"""One call from labelled scores to a calibration artifact: fit, certify on held-out rows, measure.

:func:`fit_artifact` is what ``guardrail calibrate`` runs once the estimator has scored a calibration set:

1. split the rows (seeded) into a *fit* part and a *certify* part (``certify_fraction``, default one half);
2. fit a :class:`DecoupledCalibrator` on the fit part;
3. on the certify part, which the calibrator never saw, certify thresholds for every (alpha, delta) in
   ``targets``: per component (visual against perception correctness, reasoning against answer correctness
   given correct perception, overall against answer correctness) with SGR, and for the (visual, reasoning)
   pair; and measure every section-6 metric of each component;
4. return a :class:`CalibrationArtifact` with the visual normalisation statistics and fingerprints, and (in
   ``evaluation``) the calibrated confidences and labels each component's metrics were measured on, rounded to 6
   decimals, so that ``guardrail report`` can draw reliability diagrams and risk-coverage curves from the file.

Certifying on rows the calibrator was fitted on would make the calibrated scores depend on the labels being
tested; the split keeps the guarantee of METHOD.md section 7 honest. ``certify_fraction=None`` uses every row
for both (more data, the guarantee then only approximate) and says so in ``info``.

Data a calibrator cannot learn from is refused (:func:`check_calibration_data`, a ``CalibrationError`` naming the
component, the minimum and what the data holds) instead of yielding an artifact that fails later: each component
(visual against perception, reasoning against the answer given right perception, overall against the answer)
needs at least :data:`MIN_FIT_ROWS` labelled rows in the half its calibrator is fitted on, with right and wrong
ones among them. Fewer rows leave the component unfitted, so every confidence it gives would be unknown; one class
only (every answer right, say) teaches a constant: every answer as sure as the calibration data was right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..confidence.familiarity import FamiliarityReference
from ..confidence.normalization import VisualNormalization
from ..errors import CalibrationError
from .artifact import CalibrationArtifact, HeldOutScores
from .decoupled import DecoupledCalibrator, MaybeArray, _optional_array, labelled_arrays
from .risk import CertifiedThreshold, certify_pair, certify_threshold
from .summary import CalibrationSummary, calibration_summary

__all__ = ["MIN_FIT_ROWS", "MIN_ROWS", "check_calibration_data", "fit_artifact", "remeasure_metrics", "split_rows"]

FloatArray = npt.NDArray[np.float64]

MIN_FIT_ROWS = 10
"""Labelled rows each component's calibrator needs in the half of the data it is fitted on (the calibrator's own
``min_samples``: with fewer it is left unfitted and the component unknown at use)."""
MIN_ROWS = 2 * MIN_FIT_ROWS
"""Labelled items a calibration needs at the least: half of them fit the calibrators, half certify and measure."""

_TARGETS = {
    "visual": "is the perception right?",
    "reasoning": "is the answer right, given right perception?",
    "overall": "is the answer right?",
}


def fit_artifact(
    *,
    visual_scores: MaybeArray | None,
    reasoning_scores: MaybeArray | None,
    answer_correct: MaybeArray,
    perception_correct: MaybeArray | None = None,
    holistic_scores: MaybeArray | None = None,
    visual_statistic: MaybeArray | None = None,
    grounding_weight: float = 1.0,
    stability_weight: float = 0.0,
    model_fingerprint: str,
    data_fingerprint: str,
    calibrator: DecoupledCalibrator | None = None,
    targets: Sequence[tuple[float, float]] = ((0.05, 0.1), (0.1, 0.1)),
    certify_fraction: float | None = 0.5,
    seed: int = 0,
    info: Mapping[str, Any] | None = None,
    covariates: Mapping[str, MaybeArray] | None = None,
    familiarity: FamiliarityReference | None = None,
    discount_only: MaybeArray | None = None,
    verbalized: Mapping[str, MaybeArray] | None = None,
    groups: Sequence[str | None] | None = None,
) -> CalibrationArtifact:
    """Fit, certify and measure (see the module docstring); ``calibrator`` is an unfitted template.

    ``covariates`` are the per-row shift covariates the calibrator discounts by (``SHIFT_COVARIATES``), and
    ``familiarity`` the feature reference they were measured against, stored in the artifact for inference;
    ``discount_only`` marks rows that only teach the shift discounts (see ``DecoupledCalibrator.fit``);
    ``verbalized`` holds the model's own ``visual`` / ``reasoning`` scores (NaN = not written), blended in.
    ``grounding_weight`` and ``stability_weight`` are the weights ``visual_statistic`` was computed with;
    ``groups`` names each row's group for cross-fitting (``DecoupledCalibrator.fit``).
    """
    y, *parts = labelled_arrays(answer_correct, visual_scores, reasoning_scores, holistic_scores, perception_correct)
    n = y.shape[0]
    arrays = dict(zip(("visual", "reasoning", "holistic", "perception"), parts, strict=True))
    fit_rows, test_rows = split_rows(n, certify_fraction, seed)
    check_calibration_data(
        visual_scores=arrays["visual"],
        reasoning_scores=arrays["reasoning"],
        holistic_scores=arrays["holistic"],
        answer_correct=y,
        perception_correct=arrays["perception"],
        fit_rows=fit_rows,
        discount_only=discount_only,
    )
    shift = {
        name: _optional_array(name, values, n, labels=False, bounded=False)
        for name, values in (covariates or {}).items()
    }
    verbal = {
        name: _optional_array(f"verbalized {name}", values, n, labels=False)
        for name, values in (verbalized or {}).items()
    }
    template = calibrator if calibrator is not None else DecoupledCalibrator()
    fitted = DecoupledCalibrator(**template.get_params()).fit(
        arrays["visual"][fit_rows],
        arrays["reasoning"][fit_rows],
        answer_correct=y[fit_rows],
        perception_correct=arrays["perception"][fit_rows],
        holistic_scores=arrays["holistic"][fit_rows],
        covariates={name: values[fit_rows] for name, values in shift.items()},
        discount_only=None if discount_only is None else np.asarray(discount_only, dtype=np.float64)[fit_rows],
        verbalized={name: values[fit_rows] for name, values in verbal.items()},
        groups=None if groups is None else [groups[int(i)] for i in fit_rows],
    )
    out = fitted.predict_components(
        arrays["visual"][test_rows],
        arrays["reasoning"][test_rows],
        arrays["holistic"][test_rows],
        covariates={name: values[test_rows] for name, values in shift.items()},
        verbalized={name: values[test_rows] for name, values in verbal.items()},
    )
    perception, answer = arrays["perception"][test_rows], y[test_rows]
    targets_by_component = {
        "visual": (out["visual"], perception, ~np.isnan(perception)),
        "reasoning": (out["reasoning"], answer, (perception == 1.0) | np.all(np.isnan(perception))),
        "overall": (out["overall"], answer, ~np.isnan(answer)),
    }
    metrics: dict[str, CalibrationSummary] = {}
    evaluation: dict[str, HeldOutScores] = {}
    thresholds: list[CertifiedThreshold] = []
    for name, (confidence, labels, rows) in targets_by_component.items():
        rows = rows & ~np.isnan(labels)
        known = rows & ~np.isnan(confidence)
        if np.any(known):
            metrics[name] = calibration_summary(confidence[known], labels[known], seed=seed)
            evaluation[name] = HeldOutScores.from_arrays(confidence[known], labels[known])
        if np.any(rows):
            for alpha, delta in targets:
                thresholds.append(
                    certify_threshold(confidence[rows], labels[rows], alpha=alpha, delta=delta, component=name)
                )
    both = ~np.isnan(answer)
    if np.any(both) and np.any(~np.isnan(out["visual"])) and np.any(~np.isnan(out["reasoning"])):
        for alpha, delta in targets:
            thresholds.append(
                certify_pair(out["visual"][both], out["reasoning"][both], answer[both], alpha=alpha, delta=delta)
            )
    provenance = {
        "n": n,
        "n_fit": int(fit_rows.size),
        "n_certify": int(test_rows.size),
        "certify_fraction": certify_fraction,
        "split_seed": seed,
        "metrics_on": "certify rows" if certify_fraction is not None else "fit rows (in-sample)",
        **dict(info or {}),
    }
    return CalibrationArtifact.create(
        fitted,
        model_fingerprint=model_fingerprint,
        data_fingerprint=data_fingerprint,
        visual_normalization=None
        if visual_statistic is None
        else VisualNormalization.fit(
            _optional_array("visual_statistic", visual_statistic, n, labels=False, bounded=False).tolist(),
            grounding_weight=grounding_weight,
            stability_weight=stability_weight,
        ),
        thresholds=thresholds,
        metrics=metrics,
        info=provenance,
        evaluation=evaluation,
        familiarity=familiarity,
    )


def check_calibration_data(
    *,
    visual_scores: MaybeArray | None,
    reasoning_scores: MaybeArray | None,
    answer_correct: MaybeArray,
    perception_correct: MaybeArray | None = None,
    holistic_scores: MaybeArray | None = None,
    fit_rows: npt.NDArray[np.intp] | None = None,
    discount_only: MaybeArray | None = None,
) -> None:
    """Refuse data its calibrators cannot learn from (see the module docstring): ``CalibrationError`` listing,
    for each component that fails, what it needs and what the data holds.

    ``fit_rows``: the rows the calibrators are fitted on (default: all); ``discount_only`` marks rows that only
    teach the shift discounts (garbled-question copies), which count for nothing here. A component with no score
    measured on any row (visual without perception labels, say) is not checked: it stays unknown by design.
    """
    y, v, r, h, perception = labelled_arrays(
        answer_correct, visual_scores, reasoning_scores, holistic_scores, perception_correct
    )
    n = y.shape[0]
    user = np.ones(n, dtype=bool)
    if discount_only is not None:
        user = _optional_array("discount_only", discount_only, n, labels=True) != 1.0
    in_fit = np.zeros(n, dtype=bool)
    in_fit[np.arange(n) if fit_rows is None else fit_rows] = True
    labelled = np.any(~np.isnan(perception))
    given_perception = perception == 1.0 if labelled else np.ones(n, dtype=bool)
    everywhere = np.ones(n, dtype=bool)
    components = {  # name: (target, score measured, the rows its calibrator learns from)
        "visual": (perception, ~np.isnan(v) if labelled else np.zeros(n, dtype=bool), everywhere),
        "reasoning": (y, ~np.isnan(r), given_perception),
        "overall": (y, (~np.isnan(v) & ~np.isnan(r)) | ~np.isnan(h), everywhere),
    }
    problems = []
    for name, (target, measured, among) in components.items():
        if not np.any(user & measured):
            continue  # never measured (e.g. visual without perception labels): unknown by design
        rows = user & measured & among & ~np.isnan(target)
        problem = _class_problem(name, target[rows], target[rows & in_fit], split=fit_rows is not None)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise CalibrationError("cannot calibrate on this data: " + "; ".join(problems))


def _class_problem(name: str, every: FloatArray, fit: FloatArray, *, split: bool) -> str | None:
    """What ``name``'s labels lack (all labelled rows ``every``, those its calibrator is fitted on ``fit``)."""
    what = f"{name} ({_TARGETS[name]})"
    right, wrong = int(np.sum(every == 1.0)), int(np.sum(every == 0.0))
    counts = f"{every.size} labelled rows, {right} right and {wrong} wrong"
    if every.size < (MIN_ROWS if split else MIN_FIT_ROWS):
        needed = f"at least {MIN_ROWS} (half fit its calibrator, half certify)" if split else f"{MIN_FIT_ROWS}"
        return f"{what} has {counts}; it needs {needed}"
    if right == 0 or wrong == 0:
        return (
            f"{what} has {counts}: a calibrator fitted on one class only would give every answer the same "
            "confidence; it needs right and wrong ones"
        )
    fit_right, fit_wrong = int(np.sum(fit == 1.0)), int(np.sum(fit == 0.0))
    if fit.size < MIN_FIT_ROWS or fit_right == 0 or fit_wrong == 0:
        return (
            f"{what}: the half of the rows its calibrator is fitted on (drawn by the seed) has {fit.size}, "
            f"{fit_right} right and {fit_wrong} wrong; it needs at least {MIN_FIT_ROWS} with right and wrong ones "
            f"(all rows: {counts}); add labelled data, or try another seed"
        )
    return None


def split_rows(n: int, fraction: float | None, seed: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    everything = np.arange(n)
    if fraction is None:
        return everything, everything
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
        raise CalibrationError(f"`certify_fraction` must be a float in (0, 1) or None, got {fraction!r}")
    """Seeded (fit, certify) row indices: ``fraction`` of ``n`` rows certify; ``None`` uses every row for both."""
    order = np.random.default_rng(seed).permutation(n)
    cut = n - round(fraction * n)
    if cut < 1 or cut >= n:
        raise CalibrationError(f"`certify_fraction`={fraction} leaves an empty part of {n} rows")
    return np.sort(order[:cut]), np.sort(order[cut:])


def remeasure_metrics(artifact: CalibrationArtifact, *, note: Mapping[str, Any] | None = None) -> CalibrationArtifact:
    """``artifact`` with its metrics measured again on its own held-out scores (``evaluation``).

    For when a metric's definition changes (e.g. the tie rule of AURC): the calibrators, thresholds and data stay
    as fitted, and the metrics are those the current code gives on the same held-out rows (confidences as stored,
    rounded to 6 places). ``note`` (e.g. the command and commit) is kept in ``info["metrics_remeasured"]``.
    """
    if not artifact.evaluation:
        raise CalibrationError("the artifact keeps no held-out scores (`evaluation`): re-run calibration instead")
    seed = int(artifact.info.get("split_seed", 0))
    metrics = {
        name: calibration_summary(np.asarray(scores.confidence), np.asarray(scores.correct, dtype=float), seed=seed)
        for name, scores in artifact.evaluation.items()
    }
    info = {**artifact.info, "metrics_remeasured": dict(note or {})}
    return artifact.model_copy(update={"metrics": metrics, "info": info})
