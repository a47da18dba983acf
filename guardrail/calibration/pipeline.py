"""Calibrate a model end to end: score labelled items, fit the visual normalisation and the calibrators, certify.

The order matters. The visual normalisation (mean, std of the raw statistic s) is fitted first, and the visual
score the calibrator learns from is the *normalised* one, exactly as the estimator will compute it at inference
time with the artifact loaded. Otherwise the fitted map would be applied to a different scale.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..confidence.normalization import VisualNormalization
from ..confidence.perturb import PERTURBATIONS
from ..data.labelled import LabelledItem
from ..errors import ConfigurationError
from .artifact import CalibrationArtifact, fingerprint_data, fingerprint_model
from .collect import ScoredItem, remeasure, score_items, scored_arrays
from .decoupled import DecoupledCalibrator
from .fit import fit_artifact
from .perturbation_choice import PAPER_DEFAULT, ProbeSetting, choose_perturbation

__all__ = ["DEFAULT_TARGETS", "calibrate_rows", "calibrate_transformers_model", "normalized_visual"]

# Isotonic part calibrators by default: on the reference model Platt's sigmoid misfits the visual score
# (held-out visual ECE10 0.110 Platt vs 0.031 isotonic on 1,250 rows); use "platt" for small data sets.
DEFAULT_TARGETS: tuple[tuple[float, float], ...] = ((0.05, 0.1), (0.1, 0.1), (0.2, 0.1))
"""(max_error alpha, delta) pairs certified by default."""


def normalized_visual(visual_score: np.ndarray, normalization: VisualNormalization) -> np.ndarray:
    """The visual certainty the estimator reports under ``normalization`` (NaN stays NaN)."""
    return np.array([np.nan if np.isnan(s) else normalization.apply(float(s)) for s in visual_score])


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
) -> CalibrationArtifact:
    """Fit an artifact on already-scored rows (see the module docstring for the order of the fits)."""
    arrays = scored_arrays(rows)
    statistic = arrays["visual_score"]
    visual = arrays["visual"]
    if np.any(~np.isnan(statistic)):
        visual = normalized_visual(statistic, VisualNormalization.fit(statistic.tolist()))
    errors = sum(r.error is not None for r in rows)
    return fit_artifact(
        visual_scores=visual,
        reasoning_scores=arrays["reasoning"],
        holistic_scores=arrays["holistic"],
        answer_correct=arrays["answer_correct"],
        perception_correct=arrays["perception_correct"],
        visual_statistic=None if np.all(np.isnan(statistic)) else statistic,
        model_fingerprint=model_fingerprint,
        data_fingerprint=data_fingerprint,
        calibrator=DecoupledCalibrator(
            visual=part_calibrator, reasoning=part_calibrator, holistic=part_calibrator, combiner=combiner
        ),
        targets=targets,
        seed=seed,
        info={"rows_with_errors": errors, **(info or {})},
    )


def calibrate_transformers_model(
    model_dir: str | os.PathLike[str],
    items: Sequence[LabelledItem],
    *,
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
    device: str | None = None,
) -> tuple[CalibrationArtifact, list[ScoredItem]]:
    """Score ``items`` with the model in ``model_dir`` and fit its calibration artifact.

    ``perturbation="auto"`` chooses the visual probe on the scored rows (``choose_perturbation``: the paper's
    patch blackening unless another candidate ranks perception errors better) and re-measures every row with
    the winner before fitting; ``on_probe_item`` is called after each of those re-measurements.
    """
    from ..backends.transformers import TransformersBackend

    auto = perturbation == "auto"
    if not auto and perturbation not in PERTURBATIONS:
        raise ConfigurationError(
            f"`perturbation` must be 'auto' or one of {', '.join(PERTURBATIONS)}, got {perturbation!r}"
        )
    setting = PAPER_DEFAULT if auto else ProbeSetting(perturbation, blackout_probability)  # type: ignore[arg-type]
    backend: Backend = TransformersBackend.from_pretrained(Path(model_dir), device=device)
    rows = score_items(backend, setting.estimator(draws=draws), items, on_item=on_item)
    info: dict[str, Any] = {"data": data_name, "items": len(items)}
    if auto:
        choice = choose_perturbation(
            backend, rows, draws=draws, seed=seed, measured_with=setting, on_item=on_probe_item
        )
        if choice.chosen != setting:
            setting = choice.chosen
            rows = remeasure(backend, setting.estimator(draws=draws), rows, on_item=on_probe_item)
        info["perturbation_choice"] = choice.as_info()
    data_fingerprint = fingerprint_data(
        [
            (item.request.model_dump(mode="json"), item.answer, item.perception, sorted(item.tags.items()))
            for item in items
        ]
    )
    # The estimator settings the normalisation and calibrators were fitted under: load_guard reuses them.
    info["estimator"] = {"draws": draws, **setting.as_info()}
    artifact = calibrate_rows(
        rows,
        model_fingerprint=fingerprint_model(Path(model_dir)),
        data_fingerprint=data_fingerprint,
        combiner=combiner,
        part_calibrator=part_calibrator,
        targets=targets,
        seed=seed,
        info=info,
    )
    return artifact, rows
