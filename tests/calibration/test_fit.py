"""From labelled scores to an artifact: split, fit, certify on held-out rows, measure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from guardrail.calibration import (
    CalibrationArtifact,
    DecoupledCalibrator,
    calibration_summary,
    fit_artifact,
    load_artifact,
    save_artifact,
)
from guardrail.calibration.fit import remeasure_metrics
from guardrail.errors import CalibrationError
from tests.support.calibration import decoupled_world

WORLD = decoupled_world(4000, seed=11)
FRESH = decoupled_world(40000, seed=12)


def make(**kwargs: object) -> CalibrationArtifact:
    args: dict[str, object] = {
        "visual_scores": WORLD["visual"],
        "reasoning_scores": WORLD["reasoning"],
        "answer_correct": WORLD["answer"],
        "perception_correct": WORLD["perception"],
        "model_fingerprint": "sha256:model",
        "data_fingerprint": "sha256:data",
        "calibrator": DecoupledCalibrator(combiner="platt_harmonic"),
        "targets": [(0.3, 0.1)],
    }
    args.update(kwargs)
    return fit_artifact(**args)  # type: ignore[arg-type]


def test_artifact_holds_every_component_and_the_pair(tmp_path: Path) -> None:
    artifact = make(visual_statistic=np.log(WORLD["visual"]), info={"split": "calibration"})
    assert {t.component for t in artifact.thresholds} == {"visual", "reasoning", "overall", "visual+reasoning"}
    assert set(artifact.metrics) == {"visual", "reasoning", "overall"}
    assert artifact.info["n_fit"] + artifact.info["n_certify"] == 4000
    assert artifact.info["n_certify"] == 2000
    assert artifact.info["split"] == "calibration"
    assert artifact.metrics["overall"].n == 2000
    assert artifact.metrics["overall"].ece_10 < 0.05
    assert artifact.metrics["visual"].ece_10 < 0.05
    assert artifact.visual_normalization is not None
    assert artifact.visual_normalization.mean == pytest.approx(float(np.mean(np.log(WORLD["visual"]))))
    assert load_artifact(save_artifact(artifact, tmp_path / "a.json")) == artifact


def test_certified_overall_threshold_holds_on_fresh_data() -> None:
    artifact = make()
    certified = artifact.certified("overall", max_error=0.3, delta=0.1)
    assert certified is not None
    assert certified.feasible
    assert certified.threshold is not None
    overall = artifact.decoupled_calibrator().predict_components(FRESH["visual"], FRESH["reasoning"])["overall"]
    accepted = overall >= certified.threshold
    assert accepted.mean() > 0.05
    assert 1 - FRESH["answer"][accepted].mean() <= 0.3


def test_split_is_seeded_and_optional() -> None:
    a, b = make(seed=3), make(seed=3)
    assert a.calibrator == b.calibrator
    assert make(seed=4).calibrator != a.calibrator
    in_sample = make(certify_fraction=None)
    assert in_sample.info["metrics_on"] == "fit rows (in-sample)"
    assert in_sample.metrics["overall"].n == 4000


def test_without_perception_labels_only_answer_targets_are_certified() -> None:
    artifact = make(perception_correct=None)
    assert "visual" not in artifact.metrics
    assert {t.component for t in artifact.thresholds} == {"reasoning", "overall"}


@pytest.mark.parametrize("fraction", [0.0, 1.0, 2, True])
def test_bad_fraction(fraction: object) -> None:
    with pytest.raises(CalibrationError, match="`certify_fraction` must be a float in"):
        make(certify_fraction=fraction)


def test_visual_statistic_fits_the_normalization_on_measured_rows() -> None:
    artifact = make(visual_statistic=[1.0, 3.0, None, float("nan")] * 1000)
    assert artifact.visual_normalization is not None
    assert (artifact.visual_normalization.mean, artifact.visual_normalization.std) == (2.0, 1.0)


def test_held_out_scores_are_what_the_metrics_were_measured_on() -> None:
    artifact = make()
    assert artifact.evaluation is not None
    assert set(artifact.evaluation) == set(artifact.metrics)
    for name, scores in artifact.evaluation.items():
        measured = artifact.metrics[name]
        assert len(scores.confidence) == len(scores.correct) == measured.n
        assert all(c == round(c, 6) for c in scores.confidence)
        again = calibration_summary(scores.confidence, scores.correct, noise_draws=10)
        assert again.accuracy == measured.accuracy
        assert again.ece_10 == pytest.approx(measured.ece_10, abs=1e-5)  # up to the 6-decimal rounding
        assert again.aurc == pytest.approx(measured.aurc, abs=1e-5)
    assert artifact.metrics["reasoning"].n < artifact.metrics["overall"].n  # given correct perception only


def test_remeasured_metrics_are_the_current_code_on_the_stored_held_out_scores(tmp_path: Path) -> None:
    artifact = make()
    stale = artifact.model_copy(
        update={"metrics": {k: v.model_copy(update={"aurc": 0.99}) for k, v in artifact.metrics.items()}}
    )
    again = remeasure_metrics(stale, note={"command": "guardrail calibrate --remeasure a.json --out a.json"})
    assert again.info["metrics_remeasured"]["command"].startswith("guardrail calibrate --remeasure")
    assert again.calibrator == artifact.calibrator
    assert again.thresholds == artifact.thresholds
    for name, measured in artifact.metrics.items():
        assert again.metrics[name].aurc == pytest.approx(measured.aurc, abs=1e-5)  # the stale figure is replaced
        assert again.metrics[name].ece_10 == pytest.approx(measured.ece_10, abs=1e-5)
        assert again.metrics[name].eaurc_exact is not None
    assert load_artifact(save_artifact(again, tmp_path / "a.json")) == again
    with pytest.raises(CalibrationError, match="keeps no held-out scores"):
        remeasure_metrics(artifact.model_copy(update={"evaluation": None}))
