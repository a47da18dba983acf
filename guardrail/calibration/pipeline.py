"""Calibrate a model end to end: score labelled items, fit the visual normalisation and the calibrators, certify.

The order matters. The visual normalisation (mean, std of the raw statistic s) is fitted first, and the visual
score the calibrator learns from is the *normalised* one, exactly as the estimator will compute it at inference
time with the artifact loaded. Otherwise the fitted map would be applied to a different scale. Likewise the
familiarity reference (``guardrail.confidence.familiarity``) is fitted on the rows' input features first (the
directions on the fit half, the p-value reference on the certify half, question-noise copies left out: they are
not inputs as the user gives them), and every row's familiarity and shift covariates are then measured against
it, as the estimator will at inference, before the calibrator learns how confidence falls with shift.

Data nothing can be learnt from is refused before the model is run where that can be known (fewer than
:data:`~guardrail.calibration.fit.MIN_ROWS` items: :func:`check_item_count`), else once the rows are scored and
before anything is fitted: a component without enough labelled rows, or with right or wrong answers only
(:func:`~guardrail.calibration.fit.check_calibration_data`), a visual statistic that is infinite or the same on
every row, or inputs whose features do not vary (every image the same to the model, say: familiarity would have
no scale to measure a new input by). Each is a ``CalibrationError`` saying what is needed and what was found.

The familiarity reference is fitted on the model's input features where the rows carry them (a white-box model in
process), else on features the client computes from each row's request (``confidence.client_features``: question
text and images, no model needed), which is what a served or hosted model can be measured by; ``calibrate_rows``'
``familiarity_features`` chooses either explicitly (``"client"`` for an artifact meant for a served copy of an
in-process model, say).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from ..backends.base import Backend
from ..confidence.client_features import measure_familiarity, request_features
from ..confidence.familiarity import SIDES, FamiliarityReference, FeatureKind, FeatureReference
from ..confidence.feature_names import VISUAL_SCORE
from ..confidence.normalization import VisualNormalization
from ..confidence.perturb import PERTURBATIONS
from ..confidence.settings import BlackBoxSetting, EstimatorSetting
from ..data.labelled import LabelledItem
from ..data.question_noise import with_question_noise
from ..errors import CalibrationError, ConfigurationError
from .artifact import CalibrationArtifact, fingerprint_data, served_model_fingerprint
from .collect import ScoredItem, ascore_items, remeasure, score_items, scored_arrays
from .decoupled import SHIFT_COVARIATES, VERBALIZED_FEATURES, DecoupledCalibrator
from .fit import MIN_ROWS, check_calibration_data, fit_artifact, split_rows
from .perturbation_choice import PAPER_DEFAULT, ProbeSetting, choose_perturbation, reweigh
from .stability_choice import choose_stability, row_group

__all__ = [
    "DEFAULT_TARGETS",
    "apply_artifact",
    "assess_familiarity",
    "calibrate_backend",
    "calibrate_rows",
    "calibrate_served",
    "check_item_count",
    "familiarity_kind",
    "fit_familiarity",
    "items_fingerprint",
    "normalized_visual",
]

# Isotonic part calibrators by default: on the reference model Platt's sigmoid misfits the visual score
# (held-out visual ECE10 0.110 Platt vs 0.031 isotonic on 1,250 rows); use "platt" for small data sets.
DEFAULT_TARGETS: tuple[tuple[float, float], ...] = ((0.05, 0.1), (0.1, 0.1), (0.2, 0.1))
"""(max_error alpha, delta) pairs certified by default."""


def check_item_count(n: int, *, where: str = "the data") -> None:
    """Refuse, before any model runs, fewer labelled items than a calibration needs (``MIN_ROWS``)."""
    if n < MIN_ROWS:
        raise CalibrationError(
            f"cannot calibrate on {where}: it holds {n} labelled item{'s' if n != 1 else ''}; calibration needs at "
            f"least {MIN_ROWS} (half fit the calibrators, at least {MIN_ROWS // 2} for each component, half certify "
            "its thresholds and measure it), and right and wrong answers among them"
        )


def normalized_visual(visual_score: np.ndarray, normalization: VisualNormalization) -> np.ndarray:
    """The visual certainty the estimator reports under ``normalization`` (NaN stays NaN)."""
    return np.array([np.nan if np.isnan(s) else normalization.apply(float(s)) for s in visual_score])


def _is_user_input(row: ScoredItem) -> bool:
    """Whether a row is an input as the user gave it (not a question-noise copy made by calibration)."""
    return "question_noise" not in row.item.tags


def fit_familiarity(
    rows: Sequence[ScoredItem], *, certify_fraction: float = 0.5, seed: int = 0, features: FeatureKind = "model"
) -> FamiliarityReference | None:
    """The familiarity reference of the rows' input features (see the module docstring); ``None`` without any.

    ``features``: the model's (the rows' ``signals.embeddings``) or the client's, computed from each row's
    request (``confidence.client_features``). Uses the same seeded fit/certify split as
    :func:`~guardrail.calibration.fit.fit_artifact` with these arguments.
    """
    fit_rows, certify_rows = split_rows(len(rows), certify_fraction, seed)
    fit_features: dict[str, list[tuple[float, ...]]] = {}
    reference_features: dict[str, list[tuple[float, ...]]] = {}
    for indices, out in ((fit_rows, fit_features), (certify_rows, reference_features)):
        for i in indices:
            row = rows[int(i)]
            if row.signals is not None and _is_user_input(row):
                vectors = row.signals.embeddings if features == "model" else request_features(row.item.request)
                for side, vector in vectors.items():
                    out.setdefault(side, []).append(vector)
    sides = [s for s in SIDES if len(fit_features.get(s, ())) >= 3 and reference_features.get(s)]
    if not sides:
        return None
    for side in sides:
        if not FeatureReference.varies(fit_features[side]):
            inputs = "images" if side == "image" else "questions"
            seen = "the model (their input features" if features == "model" else "the client (their client features"
            raise CalibrationError(
                f"cannot calibrate on this data: all {len(fit_features[side])} {inputs} the familiarity reference "
                f"is fitted on look the same to {seen} do not vary), so nothing tells how "
                f"far a new input may lie from them; calibrate on varied {inputs}"
            )
    return FamiliarityReference.fit(
        {s: fit_features[s] for s in sides}, {s: reference_features[s] for s in sides}, seed=seed, features=features
    )


def assess_familiarity(rows: Sequence[ScoredItem], reference: FamiliarityReference) -> list[ScoredItem]:
    """The rows with familiarity and shift covariates measured against ``reference`` (as the estimator would: with
    client features computed from each row's request where the reference is fitted on them)."""
    return [
        r
        if r.signals is None
        else dataclasses.replace(r, signals=measure_familiarity(reference, r.signals, r.item.request))
        for r in rows
    ]


def familiarity_kind(rows: Sequence[ScoredItem], requested: FeatureKind | Literal["auto"] = "auto") -> FeatureKind:
    """The features a familiarity reference is fitted on: ``requested``, or with ``"auto"`` the model's where the
    rows carry them (``signals.embeddings``, a white-box model in process), else the client's."""
    if requested != "auto":
        return requested
    carried = any(r.signals is not None and r.signals.embeddings for r in rows if _is_user_input(r))
    return "model" if carried else "client"


def apply_artifact(rows: Sequence[ScoredItem], artifact: CalibrationArtifact) -> list[ScoredItem]:
    """The rows' signals as the estimator would report them under ``artifact``: its visual normalisation and its
    familiarity reference applied to the raw statistic s and the input features (rows must keep their embeddings).

    Lets one scored set be evaluated under several artifacts (e.g. fitted on different calibration subsets)
    without running the model again.
    """
    normalization = artifact.visual_normalization
    out = []
    for row in rows:
        if row.signals is not None and normalization is not None and VISUAL_SCORE in row.signals.features:
            row = row.with_visual(row.signals.features[VISUAL_SCORE], normalization)
        out.append(row)
    return out if artifact.familiarity is None else assess_familiarity(out, artifact.familiarity)


def items_fingerprint(items: Sequence[LabelledItem]) -> str:
    """The data fingerprint of labelled items: requests (images included), answers, perception, tags."""
    return fingerprint_data(
        [
            (item.request.model_dump(mode="json"), item.answer, item.perception, sorted(item.tags.items()))
            for item in items
        ]
    )


def calibrate_rows(
    rows: Sequence[ScoredItem],
    *,
    model_fingerprint: str,
    data_fingerprint: str,
    combiner: str = "platt_harmonic",
    part_calibrator: str = "isotonic",
    targets: Sequence[tuple[float, float]] = DEFAULT_TARGETS,
    seed: int = 0,
    info: dict[str, Any] | None = None,
    shift: bool = True,
    grounding_weight: float = 1.0,
    stability_weight: float = 0.0,
    cross_fit: bool = True,
    familiarity_features: FeatureKind | Literal["auto"] = "auto",
) -> CalibrationArtifact:
    """Fit an artifact on already-scored rows (see the module docstring for the order of the fits).

    ``shift=False`` fits neither the familiarity reference nor the shift discounts (question-noise copies are still
    kept out of the calibrators). ``grounding_weight`` and ``stability_weight``: the weights of the grounding KL and
    of the stability probe's fall in the rows' statistic s (their probe setting's), stored with its normalisation.
    ``cross_fit``: the shift discounts and the combiner learn from parts cross-fitted over the rows' groups (their
    corruption kinds, ``stability_choice.row_group``; ``DecoupledCalibrator.fit``), where the data name them.
    ``familiarity_features``: what the familiarity reference is fitted on (:func:`familiarity_kind`).
    """
    arrays = scored_arrays(rows)
    check_calibration_data(
        visual_scores=arrays["visual"],
        reasoning_scores=arrays["reasoning"],
        holistic_scores=arrays["holistic"],
        answer_correct=arrays["answer_correct"],
        perception_correct=arrays["perception_correct"],
        fit_rows=split_rows(len(rows), 0.5, seed)[0],
        discount_only=[0.0 if _is_user_input(r) else 1.0 for r in rows],
    )
    _check_statistic(arrays["visual_score"], rows)
    kind = familiarity_kind(rows, familiarity_features)
    familiarity = fit_familiarity(rows, seed=seed, features=kind) if shift else None
    if familiarity is not None:
        rows = assess_familiarity(rows, familiarity)
        arrays = scored_arrays(rows)
    statistic = arrays["visual_score"]
    visual = arrays["visual"]
    if np.any(~np.isnan(statistic)):
        visual = normalized_visual(
            statistic,
            VisualNormalization.fit(
                statistic.tolist(), grounding_weight=grounding_weight, stability_weight=stability_weight
            ),
        )
    errors = sum(r.error is not None for r in rows)
    noisy = sum(not _is_user_input(r) for r in rows)
    return fit_artifact(
        visual_scores=visual,
        reasoning_scores=arrays["reasoning"],
        holistic_scores=arrays["holistic"],
        answer_correct=arrays["answer_correct"],
        perception_correct=arrays["perception_correct"],
        visual_statistic=None if np.all(np.isnan(statistic)) else statistic,
        grounding_weight=grounding_weight,
        stability_weight=stability_weight,
        groups=[row_group(r) for r in rows] if cross_fit else None,
        model_fingerprint=model_fingerprint,
        data_fingerprint=data_fingerprint,
        calibrator=DecoupledCalibrator(
            visual=part_calibrator, reasoning=part_calibrator, holistic=part_calibrator, combiner=combiner
        ),
        targets=targets,
        seed=seed,
        info={"rows_with_errors": errors, "rows_with_question_noise": noisy, **(info or {})},
        covariates=None if familiarity is None else {name: arrays[name] for name in SHIFT_COVARIATES},
        familiarity=familiarity,
        discount_only=[0.0 if _is_user_input(r) else 1.0 for r in rows],
        verbalized={
            name: arrays[feature]
            for name, feature in VERBALIZED_FEATURES.items()
            if not np.all(np.isnan(arrays[feature]))
        },
    )


def _check_statistic(statistic: np.ndarray, rows: Sequence[ScoredItem]) -> None:
    """Refuse a visual statistic s that cannot be normalised: infinite somewhere, or the same on every row."""
    infinite = np.flatnonzero(np.isinf(statistic))
    if infinite.size:
        first = rows[int(infinite[0])].item.tags.get("line")
        where = f" (the first: line {first} of the data)" if first else ""
        raise CalibrationError(
            f"cannot calibrate on this data: the visual statistic s is infinite on {infinite.size} of {len(rows)} "
            f"rows{where}: the model's scores there are not finite numbers"
        )
    measured = statistic[~np.isnan(statistic)]
    if measured.size >= 2 and float(np.ptp(measured)) == 0.0:
        raise CalibrationError(
            f"cannot calibrate on this data: the visual statistic s is {float(measured[0]):g} on every one of its "
            f"{measured.size} rows, so it cannot be normalised (does every row show the same image?)"
        )


def calibrate_backend(
    backend: Backend,
    items: Sequence[LabelledItem],
    *,
    model_fingerprint: str,
    draws: int = 1,
    perturbation: str = "auto",
    blackout_probability: float = 0.8,
    combiner: str = "platt_harmonic",
    part_calibrator: str = "isotonic",
    targets: Sequence[tuple[float, float]] = DEFAULT_TARGETS,
    seed: int = 0,
    data_name: str = "",
    on_item: Callable[[ScoredItem], None] | None = None,
    on_probe_item: Callable[[ScoredItem], None] | None = None,
    question_noise: float = 0.25,
    batch_size: int = 16,
    command: str | None = None,
    stability: str = "auto",
    familiarity_features: FeatureKind | Literal["auto"] = "auto",
) -> tuple[CalibrationArtifact, list[ScoredItem]]:
    """Score ``items`` with a white-box ``backend`` and fit its calibration artifact.

    ``model_fingerprint`` identifies the model the artifact belongs to (``fingerprint_model`` of its folder):
    a guard refuses an artifact fitted on another model. ``question_noise``: garbled-question copies of that
    fraction of the items are scored too (``guardrail.data.question_noise``), so that the calibrator sees questions
    the model may not understand; 0 leaves the items as they are. ``on_item`` is called after each scored row
    (originals and copies).

    ``perturbation="auto"`` chooses the visual probe on the scored rows (``choose_perturbation``: the paper's
    patch blackening unless another candidate ranks perception errors better) and re-measures every row with
    the winner before fitting; ``on_probe_item`` is called after each of those re-measurements.
    ``stability="auto"`` then chooses the stability probe's views, count and weight the same way
    (``choose_stability``: off unless it ranks perception errors better) and re-measures every row with it;
    ``"off"`` leaves it out. ``batch_size``
    items are answered in one batched generation when the backend can (answers as they would be alone).
    ``command``, the command line that ran this calibration, is recorded in the artifact (``info["command"]``).
    ``familiarity_features="client"`` fits the familiarity reference on client features (for an artifact that
    also serves the model behind a server); ``"auto"``: the model's where the backend shows them.
    """
    check_item_count(len(items))
    auto = perturbation == "auto"
    if stability not in ("auto", "off"):
        raise ConfigurationError(f"`stability` must be 'auto' or 'off', got {stability!r}")
    if not auto and perturbation not in PERTURBATIONS:
        raise ConfigurationError(
            f"`perturbation` must be 'auto' or one of {', '.join(PERTURBATIONS)}, got {perturbation!r}"
        )
    if not auto and not 0.0 <= blackout_probability <= 1.0:
        raise ConfigurationError(f"`blackout_probability` must be in [0, 1], got {blackout_probability}")
    setting = (
        PAPER_DEFAULT
        if auto
        else ProbeSetting.model_validate({"perturbation": perturbation, "blackout_probability": blackout_probability})
    )
    scored = with_question_noise(items, question_noise, seed=seed)
    rows = score_items(backend, setting.estimator(draws=draws), scored, on_item=on_item, batch_size=batch_size)
    info: dict[str, Any] = {"data": data_name, "items": len(items), "question_noise": question_noise}
    if command is not None:
        info["command"] = command
    if auto:
        choice = choose_perturbation(
            backend, rows, draws=draws, seed=seed, measured_with=setting, on_item=on_probe_item
        )
        if choice.chosen.weighted(1.0) != setting.weighted(1.0):  # another perturbation: score again
            rows = remeasure(backend, choice.chosen.estimator(draws=draws), rows, on_item=on_probe_item)
        elif choice.chosen != setting:  # the same KL and H, weighed otherwise
            rows = reweigh(rows, choice.chosen.grounding_weight)
        setting = choice.chosen
        info["perturbation_choice"] = choice.as_info()
    if stability == "auto":
        chosen = choose_stability(
            backend, rows, grounding_weight=setting.grounding_weight, seed=seed, on_item=on_probe_item
        )
        info["stability_choice"] = chosen.as_info()
        if chosen.chosen.count:
            setting = setting.with_stability(chosen.chosen, chosen.weight)
            rows = remeasure(backend, setting.estimator(draws=draws), rows, on_item=on_probe_item)
    data_fingerprint = items_fingerprint(items)
    # The estimator settings the normalisation and calibrators were fitted under: load_guard reuses them.
    info["estimator"] = EstimatorSetting(draws=draws, probe=setting).as_info()
    artifact = calibrate_rows(
        rows,
        model_fingerprint=model_fingerprint,
        data_fingerprint=data_fingerprint,
        combiner=combiner,
        part_calibrator=part_calibrator,
        targets=targets,
        seed=seed,
        info=info,
        grounding_weight=setting.grounding_weight,
        stability_weight=setting.stability_weight,
        familiarity_features=familiarity_features,
    )
    return artifact, rows


def calibrate_served(
    backend: Backend,
    items: Sequence[LabelledItem],
    *,
    model: str,
    base_url: str,
    setting: BlackBoxSetting | None = None,
    combiner: str = "platt_harmonic",
    part_calibrator: str = "isotonic",
    targets: Sequence[tuple[float, float]] = DEFAULT_TARGETS,
    seed: int = 0,
    data_name: str = "",
    concurrency: int = 8,
    on_item: Callable[[ScoredItem], None] | None = None,
    command: str | None = None,
) -> tuple[CalibrationArtifact, list[ScoredItem]]:
    """Score ``items`` with a served model's black-box signals and fit its artifact, bound to the served ``model``.

    The signals are those of ``setting.estimator()`` (:class:`~guardrail.confidence.settings.BlackBoxSetting`:
    visual from answer agreement under K perturbed re-queries, reasoning and holistic from the answer's token
    log-probs or from sampled re-asks; no server-side scoring), ``concurrency`` items at once. No familiarity and
    no shift discounts are fitted (a served model's input features are unknown) and no question-noise copies are
    scored. The artifact records the setting (``info["blackbox"]``), the model id and ``base_url``
    (``info["served"]``); its fingerprint is :func:`~guardrail.calibration.artifact.served_model_fingerprint`.
    When every answer failed (a wrong URL, model or key), the first failure is the ``CalibrationError``.
    """
    import asyncio

    check_item_count(len(items))
    setting = setting or BlackBoxSetting()
    fingerprint = served_model_fingerprint(model)
    rows = asyncio.run(ascore_items(backend, setting.estimator(), items, concurrency=concurrency, on_item=on_item))
    failed = [r for r in rows if r.error is not None]
    if rows and len(failed) == len(rows):
        raise CalibrationError(
            f"cannot calibrate the served model {model!r} at {base_url}: every one of its {len(rows)} answers "
            f"failed; the first: {failed[0].error}"
        )
    info: dict[str, Any] = {
        "data": data_name,
        "items": len(items),
        "blackbox": setting.as_info(),
        "served": {"model": model, "base_url": base_url},
    }
    if command is not None:
        info["command"] = command
    artifact = calibrate_rows(
        rows,
        model_fingerprint=fingerprint,
        data_fingerprint=items_fingerprint(items),
        combiner=combiner,
        part_calibrator=part_calibrator,
        targets=targets,
        seed=seed,
        info=info,
        shift=False,
    )
    return artifact, rows
