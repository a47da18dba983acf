"""``guardrail ask`` and ``demo`` on a model without its calibration: one ``warning:`` line saying how to calibrate,
the table's ``calibrated`` row, ``"calibrated": false`` in JSON, no answer accepted unless ``--accept-uncalibrated``.

On the shipped reference model copied without its ``guardrail_calibration.json`` (the issue's case: it answered
with overall 0.998, familiarity unknown, accepted).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from guardrail.calibration.fit import MIN_ROWS
from guardrail.cli import _register, app
from guardrail.reference import reference_model_path
from tests.support.uncalibrated import bare_reference_model

runner = CliRunner()
_register()
QUESTION = "What color is the shape?"


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bare_reference_model(tmp_path_factory.mktemp("bare"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "scene.png"
    picture = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(picture).ellipse((14, 14, 50, 50), fill="red")
    picture.save(path)
    return path


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("warning:", "note:"))]


def test_ask_says_so_in_one_line_and_withholds_the_answer(bare_model: Path, image: Path) -> None:
    result = runner.invoke(app, ["ask", str(image), QUESTION, "--model", str(bare_model)])
    assert result.exit_code == 0, result.output
    (line,) = warning_lines(result.stderr)
    assert line.startswith(f"warning: model {bare_model} has no calibration")
    assert "policy 'default' accepts no answer (each ends in on_uncalibrated: abstain)" in line
    assert f"`guardrail calibrate --model {bare_model} --data labelled.jsonl --out {bare_model}/" in line
    assert f"at the very least {MIN_ROWS} labelled items" in line
    assert line.endswith("To decide on raw scores anyway: --accept-uncalibrated")
    assert "UncalibratedWarning" not in result.output  # the line, not a Python warning as well
    rows = {row.split()[0]: row for row in result.stdout.splitlines() if row.strip()}
    assert rows["answer"].split()[1:] == ["(withheld:", "abstained)"]
    assert "no: raw scores, not probabilities" in rows["calibrated"]
    assert "abstain (on_uncalibrated of policy 'default')" in rows["decision"]


def test_json_says_calibrated_false(bare_model: Path, image: Path) -> None:
    result = runner.invoke(app, ["ask", str(image), QUESTION, "--model", str(bare_model), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["calibrated"] is False
    assert (record["status"], record["answer"], record["decision"]["rule"]) == ("abstained", None, "on_uncalibrated")
    assert record["model_answer"] == "red"
    assert len(warning_lines(result.stderr)) == 1


def test_the_opt_in_accepts_and_still_notes_it(bare_model: Path, image: Path) -> None:
    args = ["ask", str(image), QUESTION, "--model", str(bare_model), "--json", "--accept-uncalibrated"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (line,) = warning_lines(result.stderr)
    assert line.startswith(f"note: model {bare_model} has no calibration")
    record = json.loads(result.stdout)
    assert (record["status"], record["answer"], record["calibrated"]) == ("accepted", "red", False)


def test_batch_says_so_once_and_counts_the_cause(bare_model: Path, image: Path, tmp_path: Path) -> None:
    lines = tmp_path / "q.jsonl"
    lines.write_text("\n".join(json.dumps({"image": str(image), "question": QUESTION}) for _ in range(2)) + "\n")
    result = runner.invoke(app, ["ask", "--batch", str(lines), "--model", str(bare_model)])
    assert result.exit_code == 0, result.output
    assert len(warning_lines(result.stderr)) == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["status"], r["calibrated"]) for r in records] == [("abstained", False)] * 2
    assert result.stderr.rstrip().endswith(
        "2 answered (0 accepted, 2 abstained [2 uncalibrated], 0 escalated), 0 failed"
    )


def test_the_reference_model_with_its_artifact_prints_no_such_line(image: Path) -> None:
    result = runner.invoke(app, ["ask", str(image), QUESTION, "--model", str(reference_model_path()), "--json"])
    assert result.exit_code == 0, result.output
    assert warning_lines(result.stderr) == []
    assert json.loads(result.stdout)["calibrated"] is True


@pytest.mark.slow  # the demo's agent, report and review database: over a minute on a busy 2-core machine
def test_the_demo_says_so_too(bare_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "-n", "2", "--model", str(bare_model), "--out", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    (line,) = warning_lines(result.stderr)
    assert line.startswith(f"warning: model {bare_model} has no calibration")
    assert line.endswith("To decide on raw scores anyway: a policy with accept_uncalibrated: true (--policy FILE)")
