"""``guardrail calibrate`` on a user's own model and JSONL data: the plumbing on the reference model (whose answers
are right and wrong, as calibration needs) and on a tiny random model (always wrong: refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from guardrail.calibration.artifact import fingerprint_model, load_artifact
from guardrail.cli import _register, app
from guardrail.pretrained import default_model_path
from tests.support.calibration import easyvqa_jsonl
from tests.support.tiny_vlms import save_tiny_llava

runner = CliRunner()
_register()

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return default_model_path()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return easyvqa_jsonl(tmp_path_factory.mktemp("data"), 40, mislabel=True)


@pytest.fixture(scope="module")
def colours_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    lines = []
    for i in range(24):
        name = list(COLOURS)[i % 3]
        Image.new("RGB", (64, 64), COLOURS[name]).save(folder / f"{i}.png")
        lines.append({"image": f"{i}.png", "question": "What colour is it?", "answer": name, "perception": name})
    path = folder / "labelled.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_calibrate_writes_an_artifact_bound_to_the_model(model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    result = runner.invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(data_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    artifact = load_artifact(out, expected_model_fingerprint=fingerprint_model(model_dir))
    assert artifact.info["items"] == 40
    assert artifact.info["data"] == str(data_file)
    assert artifact.visual_normalization is not None
    assert artifact.visual_normalization.std > 0
    # --perturbation auto (the default) had too few perception errors to choose from: the paper's probe, said so
    choice = artifact.info["perturbation_choice"]
    assert choice["chosen"] == "blackout(p=0.8)"
    assert "fewer than 20 of a class" in choice["reason"]
    assert artifact.info["estimator"] == {
        "draws": 1,
        "perturbation": "blackout",
        "blackout_probability": 0.8,
        "grounding_weight": 1.0,
        "stability": {"family": "mixed", "count": 0, "seed": 0},
        "stability_weight": 0.0,
    }
    # --stability auto (the default) had too few perception errors too: the stability probe stays off, said so
    assert artifact.info["stability_choice"]["chosen"] == "off"
    assert "fewer than 20 of a class" in artifact.info["stability_choice"]["reason"]
    assert artifact.visual_normalization.grounding_weight == 1.0
    assert artifact.visual_normalization.stability_weight == 0.0
    assert artifact.info["command"].startswith("guardrail ")  # the command line that made the artifact


def test_an_explicit_probe_is_recorded_and_reused_by_load_guard(
    model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    from guardrail.pretrained import load_guard

    out = tmp_path / "calibration.json"
    args = ["calibrate", "--model", str(model_dir), "--data", str(data_file), "--out", str(out)]
    result = runner.invoke(app, [*args, "--perturbation", "blackout", "--blackout-probability", "1"])
    assert result.exit_code == 0, result.output
    artifact = load_artifact(out)
    assert "perturbation_choice" not in artifact.info
    assert artifact.info["estimator"] == {
        "draws": 1,
        "perturbation": "blackout",
        "blackout_probability": 1.0,
        "grounding_weight": 1.0,
        "stability": {"family": "mixed", "count": 0, "seed": 0},
        "stability_weight": 0.0,
    }
    estimator = load_guard(model_dir, artifact=out).estimator
    assert (estimator.perturbation, estimator.blackout_probability) == ("blackout", 1.0)  # type: ignore[attr-defined]


def test_answers_that_are_all_wrong_are_refused_without_an_artifact(
    tiny_model: Path, colours_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "calibration.json"
    result = runner.invoke(
        app, ["calibrate", "--model", str(tiny_model), "--data", str(colours_file), "--out", str(out)]
    )
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cannot calibrate on this data: ")
    assert "visual (is the perception right?) has 24 labelled rows, 0 right and 24 wrong" in error
    assert "reasoning (is the answer right, given right perception?) has 0 labelled rows" in error
    assert "Traceback" not in result.output
    assert not out.exists()


def test_an_unknown_probe_is_a_clear_error(tiny_model: Path, colours_file: Path, tmp_path: Path) -> None:
    args = ["calibrate", "--model", str(tiny_model), "--data", str(colours_file), "--out", str(tmp_path / "o.json")]
    result = runner.invoke(app, [*args, "--perturbation", "fog"])
    assert result.exit_code == 2
    assert "`perturbation` must be 'auto' or one of blackout, noise, grey, blur, got 'fog'" in result.stderr


def test_bad_data_line_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"image": "x.png", "question": "q"}\n')
    result = runner.invoke(
        app, ["calibrate", "--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "o.json")]
    )
    assert result.exit_code == 2
    assert f"{data}:1: 'answer' must be a non-empty string" in result.stderr


def test_remeasure_rewrites_only_the_metrics(tmp_path: Path) -> None:
    from guardrail.calibration import save_artifact
    from tests.support.calibration import world_artifact

    artifact = world_artifact(600, seed=3)
    stale = artifact.model_copy(
        update={"metrics": {k: v.model_copy(update={"aurc": 0.99}) for k, v in artifact.metrics.items()}}
    )
    source = save_artifact(stale, tmp_path / "stale.json")
    out = tmp_path / "fresh.json"
    result = runner.invoke(app, ["calibrate", "--remeasure", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "AURC 0.9900 -> " in result.output
    fresh = load_artifact(out)
    assert fresh.thresholds == stale.thresholds
    assert fresh.metrics["overall"].aurc == pytest.approx(artifact.metrics["overall"].aurc, abs=1e-5)
    assert fresh.info["metrics_remeasured"]["command"].startswith("guardrail ")
    missing = runner.invoke(app, ["calibrate", "--remeasure", str(tmp_path / "nope.json"), "--out", str(out)])
    assert missing.exit_code == 2
    assert "error:" in missing.output


def test_an_unknown_world_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    args = ["calibrate", "--model", str(tiny_model), "--world", "mnist", "--out", str(tmp_path / "o.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--world 'mnist': expected easy-vqa or scenes" in result.stderr
    assert not (tmp_path / "o.json").exists()
