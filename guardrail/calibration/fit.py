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
from .decoupled import DecoupledCalibrator, MaybeArray, _optional_array
from .risk import CertifiedThreshold, certify_pair, certify_threshold
from .summary import CalibrationSummary, calibration_summary

__all__ = ["fit_artifact", "remeasure_metrics", "split_rows"]

FloatArray = npt.NDArray[np.float64]


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
    y = _optional_array("answer_correct", answer_correct, None, labels=True)
    n = y.shape[0]
    arrays = {
        "visual": _optional_array("visual_scores", visual_scores, n, labels=False),
        "reasoning": _optional_array("reasoning_scores", reasoning_scores, n, labels=False),
        "holistic": _optional_array("holistic_scores", holistic_scores, n, labels=False),
        "perception": _optional_array("perception_correct", perception_correct, n, labels=True),
    }
    fit_rows, test_rows = split_rows(n, certify_fraction, seed)
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
