"""The calibration artifact: round trip, fingerprints, and one clear error per way a file can be wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from guardrail.calibration import (
    CalibrationArtifact,
    DecoupledCalibrator,
    calibration_summary,
    certify_pair,
    certify_threshold,
    fingerprint_model,
    load_artifact,
    save_artifact,
)
from guardrail.calibration.artifact import ARTIFACT_SCHEMA, HeldOutScores, _checksum, fingerprint_data
from guardrail.errors import ArtifactError
from guardrail.types import Signals
from tests.support.calibration import decoupled_world

MODEL = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def artifact() -> CalibrationArtifact:
    world = decoupled_world(800, seed=4)
    calibrator = DecoupledCalibrator(combiner="platt_harmonic").fit(
        world["visual"], world["reasoning"], answer_correct=world["answer"], perception_correct=world["perception"]
    )
    out = calibrator.predict_components(world["visual"], world["reasoning"])
    return CalibrationArtifact.create(
        calibrator,
        model_fingerprint=MODEL,
        data_fingerprint=fingerprint_data([{"id": i} for i in range(10)]),
        visual_normalization=(-1.25, 0.75),
        thresholds=[
            certify_threshold(out["overall"], world["answer"], alpha=0.2, delta=0.1),
            certify_pair(out["visual"], out["reasoning"], world["answer"], alpha=0.2, delta=0.1),
        ],
        metrics={"overall": calibration_summary(out["overall"], world["answer"], noise_draws=20)},
        info={"split": "calibration", "n": 800},
    )


@pytest.fixture
def saved(artifact: CalibrationArtifact, tmp_path: Path) -> Path:
    return save_artifact(artifact, tmp_path / "calibration.json")


def rewrite(path: Path, edit: Callable[[dict[str, Any]], None], *, reseal: bool = True) -> None:
    """Edit the JSON of a saved artifact; with ``reseal`` the checksum is recomputed so that only ``edit`` is wrong."""
    data = json.loads(path.read_text())
    edit(data)
    if reseal and "checksum" in data:
        data["checksum"] = _checksum({k: v for k, v in data.items() if k != "checksum"})
    path.write_text(json.dumps(data))


def test_round_trip(artifact: CalibrationArtifact, saved: Path) -> None:
    loaded = load_artifact(saved, expected_model_fingerprint=MODEL)
    assert loaded == artifact
    signals = Signals(visual=0.4, reasoning=0.8)
    assert loaded.decoupled_calibrator().calibrate(signals) == artifact.decoupled_calibrator().calibrate(signals)
    assert loaded.visual_normalization is not None
    assert (loaded.visual_normalization.mean, loaded.visual_normalization.std) == (-1.25, 0.75)
    data = json.loads(saved.read_text())
    assert data["schema"] == ARTIFACT_SCHEMA
    assert data["version"] == 1
    assert data["created"].endswith("Z")
    assert data["visual_normalization"] == {
        "mean": -1.25,
        "std": 0.75,
        "grounding_weight": 1.0,
        "stability_weight": 0.0,
    }  # plain floats


def test_certified_lookup(artifact: CalibrationArtifact) -> None:
    found = artifact.certified("overall", max_error=0.2, delta=0.1)
    assert found is not None
    assert found.component == "overall"
    assert artifact.certified("visual+reasoning", max_error=0.2, delta=0.1) is not None
    assert artifact.certified("overall", max_error=0.05, delta=0.1) is None


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]), r"is truncated: the JSON ends early"),
        (lambda p: p.write_text(""), r"is empty \(truncated file\?\)"),
        (lambda p: p.write_text(p.read_text().replace(":", ";", 3)), r"is corrupted: invalid JSON at line 2"),
        (lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes()), r"is corrupted: not UTF-8 text"),
        (lambda p: p.write_text("[1, 2]"), r"is corrupted: expected a JSON object, got list"),
        (lambda p: rewrite(p, lambda d: d.update(schema="other")), r"is not a guardrail calibration artifact"),
        (lambda p: rewrite(p, lambda d: d.update(version=2)), r"has version 2; this guardrail reads version 1"),
        (lambda p: rewrite(p, lambda d: d.pop("created")), r"is missing field\(s\): created"),
        (lambda p: rewrite(p, lambda d: d.pop("checksum"), reseal=False), r"is missing field\(s\): checksum"),
        (
            lambda p: rewrite(p, lambda d: d["visual_normalization"].update(std=-1.0)),
            r"has an invalid field visual_normalization.std",
        ),
        (
            lambda p: rewrite(p, lambda d: d["calibrator"]["fitted"].pop("visual")),
            r"has an invalid field calibrator: .*unusable calibrator",
        ),
        (
            lambda p: rewrite(p, lambda d: d["info"].update(estimator={"draws": 1, "grounding_weight": 2.0})),
            r"has an invalid field info.estimator.grounding_weight: Input should be less than or equal to 1 "
            r"\(got 2.0\)",
        ),
        (
            lambda p: rewrite(p, lambda d: d["info"].update(estimator={"perturbation": "blakout"})),
            r"has an invalid field info.estimator.perturbation: Input should be 'blackout', 'noise', 'grey' or "
            r"'blur' \(got 'blakout'\)",
        ),
        (
            lambda p: rewrite(p, lambda d: d["info"].update(estimator={"grounding_wieght": 0.1})),
            r"has an invalid field info.estimator.grounding_wieght: unknown setting$",
        ),
        (
            lambda p: rewrite(p, lambda d: d["metrics"]["overall"].update(ece_10=0.0), reseal=False),
            r"is corrupted: checksum mismatch",
        ),
    ],
)
def test_each_corruption_is_a_clear_error_naming_the_file(saved: Path, corrupt: Any, message: str) -> None:
    corrupt(saved)
    with pytest.raises(ArtifactError, match=message) as info:
        load_artifact(saved)
    assert str(saved) in str(info.value)


def test_another_model_is_refused(saved: Path) -> None:
    with pytest.raises(
        ArtifactError, match=r"was fitted on another model: fingerprint sha256:abab.*, expected sha256:00"
    ):
        load_artifact(saved, expected_model_fingerprint="sha256:00")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"cannot read artifact .*nope.json: No such file"):
        load_artifact(tmp_path / "nope.json")


def test_nan_is_refused_at_save(artifact: CalibrationArtifact, tmp_path: Path) -> None:
    bad = artifact.model_copy(update={"info": {"x": float("nan")}})
    with pytest.raises(ArtifactError, match=r"cannot save artifact .*: artifact.info.x is NaN or infinity"):
        save_artifact(bad, tmp_path / "a.json")
    assert not (tmp_path / "a.json").exists()


def test_unfitted_calibrator_is_refused_at_create() -> None:
    with pytest.raises(ValueError, match="the calibrator is not fitted"):
        CalibrationArtifact.create(DecoupledCalibrator(), model_fingerprint=MODEL, data_fingerprint="sha256:0")


def make_model(root: Path, weights: bytes = b"\x00\x01weights") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "llava"}')
    (root / "model.safetensors").write_bytes(weights)
    return root


def test_model_fingerprint_covers_config_and_weights_only(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    first = fingerprint_model(model)
    assert first.startswith("sha256:")
    assert len(first) == 7 + 64
    (model / "calibration.json").write_text("{}")  # an artifact saved beside the weights changes nothing
    (model / "README.md").write_text("hello")
    assert fingerprint_model(model) == first
    assert fingerprint_model(make_model(tmp_path / "same")) == first
    assert fingerprint_model(make_model(tmp_path / "other", b"\x00\x02weights")) != first
    (model / "config.json").write_text('{"model_type": "llava", "x": 1}')
    assert fingerprint_model(model) != first
    assert fingerprint_model(model / "model.safetensors").startswith("sha256:")


def test_model_fingerprint_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"cannot fingerprint model .*: no such file or directory"):
        fingerprint_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"no weight files \(\*.safetensors"):
        fingerprint_model(tmp_path / "empty")


def test_data_fingerprint(tmp_path: Path) -> None:
    records = [{"question": "what shape?", "answer": "circle"}, {"question": "what colour?", "answer": "red"}]
    assert fingerprint_data(records) == fingerprint_data([dict(reversed(list(r.items()))) for r in records])
    assert fingerprint_data(records) != fingerprint_data(records[::-1])
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    assert fingerprint_data(path) == fingerprint_data(str(path))
    assert fingerprint_data(tmp_path).startswith("sha256:")
    assert fingerprint_data([np.float64(0.5)]).startswith("sha256:")
    with pytest.raises(ArtifactError, match="cannot fingerprint data"):
        fingerprint_data(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------------------------------------------------------
# The optional held-out scores (``evaluation``), kept for the report's plots


def with_evaluation(artifact: CalibrationArtifact) -> CalibrationArtifact:
    scores = HeldOutScores.from_arrays([0.12345678, 0.5, 0.9999999], [0, 1, 1.0])
    return artifact.model_copy(update={"evaluation": {"overall": scores}})


def test_held_out_scores_are_rounded_and_round_trip(artifact: CalibrationArtifact, tmp_path: Path) -> None:
    full = with_evaluation(artifact)
    assert full.evaluation is not None
    assert full.evaluation["overall"].confidence == (0.123457, 0.5, 1.0)
    assert full.evaluation["overall"].correct == (0, 1, 1)
    path = save_artifact(full, tmp_path / "a.json")
    assert json.loads(path.read_text())["evaluation"] == {
        "overall": {"confidence": [0.123457, 0.5, 1.0], "correct": [0, 1, 1]}
    }
    assert load_artifact(path) == full


def test_held_out_scores_are_covered_by_the_checksum(artifact: CalibrationArtifact, tmp_path: Path) -> None:
    path = save_artifact(with_evaluation(artifact), tmp_path / "a.json")
    rewrite(path, lambda d: d["evaluation"]["overall"]["correct"].__setitem__(0, 1), reseal=False)
    with pytest.raises(ArtifactError, match=r"is corrupted: checksum mismatch"):
        load_artifact(path)


def test_an_artifact_without_held_out_scores_is_written_and_read_as_before(saved: Path) -> None:
    data = json.loads(saved.read_text())
    assert "evaluation" not in data  # the same layout as files written before the field existed
    assert data["version"] == 1
    assert load_artifact(saved).evaluation is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e["overall"]["correct"].pop(), r"evaluation.overall: .*same length, got 3 and 2"),
        (lambda e: e["overall"]["correct"].__setitem__(0, 2), r"evaluation.overall: .*0/1 labels, got 2"),
        (lambda e: e["overall"]["confidence"].__setitem__(0, 1.5), r"evaluation.overall: .*\[0, 1\], got 1.5"),
        (lambda e: e["overall"].update(confidence=[], correct=[]), r"evaluation.overall: .*must not be empty"),
    ],
)
def test_bad_held_out_scores_are_a_clear_error(
    artifact: CalibrationArtifact, tmp_path: Path, edit: Any, message: str
) -> None:
    path = save_artifact(with_evaluation(artifact), tmp_path / "a.json")
    rewrite(path, lambda d: edit(d["evaluation"]))
    with pytest.raises(ArtifactError, match=r"has an invalid field " + message):
        load_artifact(path)


def test_a_served_models_artifact_is_bound_to_its_id(artifact: CalibrationArtifact, tmp_path: Path) -> None:
    from guardrail.calibration.artifact import served_model_fingerprint

    served = artifact.model_copy(
        update={"model_fingerprint": served_model_fingerprint("gpt-4o"), "info": {"blackbox": {"draws": 2}}}
    )
    path = save_artifact(served, tmp_path / "served.json")
    loaded = load_artifact(path, expected_model_fingerprint="served:gpt-4o")
    assert loaded.served_model == "gpt-4o"
    assert loaded.blackbox_setting is not None
    assert loaded.blackbox_setting.draws == 2
    with pytest.raises(ArtifactError, match=r"fitted on the served model 'gpt-4o', not 'claude': calibrate this one"):
        load_artifact(path, expected_model_fingerprint=served_model_fingerprint("claude"))
    with pytest.raises(ArtifactError, match=r"black-box signals, not on this model folder"):
        load_artifact(path, expected_model_fingerprint="sha256:00")


def test_a_white_box_artifact_is_refused_for_a_served_model(saved: Path) -> None:
    with pytest.raises(ArtifactError, match=r"white-box signals .* `guardrail calibrate --base-url URL --model m`"):
        load_artifact(saved, expected_model_fingerprint="served:m")
