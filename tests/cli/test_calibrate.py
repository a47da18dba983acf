"""``guardrail calibrate`` on a user's own model and JSONL data (a tiny random model: the plumbing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from guardrail.calibration.artifact import fingerprint_model, load_artifact
from guardrail.cli import _register, app
from tests.backends.tiny_vlms import save_tiny_llava

runner = CliRunner()
_register()

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
    assert artifact.info["items"] == 24
    assert artifact.info["data"] == str(data_file)
    assert artifact.visual_normalization is not None
    assert artifact.visual_normalization.std > 0


def test_bad_data_line_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"image": "x.png", "question": "q"}\n')
    result = runner.invoke(
        app, ["calibrate", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o.json")]
    )
    assert result.exit_code == 2
    assert f"{data}:1: 'answer' must be a non-empty string" in result.stderr
