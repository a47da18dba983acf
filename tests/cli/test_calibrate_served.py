"""``guardrail calibrate --base-url URL --model NAME``: options that do not go together are refused in one line
(exit 2) before any data is read or any server asked; the real-server run is in
``tests/backends/test_vllm_calibrate.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from guardrail.cli import _register, app

runner = CliRunner()
_register()

URL = "http://127.0.0.1:9/v1"  # the discard port: nothing answers, and no test gets that far


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--base-url", URL], r"--base-url needs --model NAME: the served model's id"),
        (["--base-url", "127.0.0.1:8000/v1", "--model", "m"], r"--base-url '127.0.0.1:8000/v1': expected an http"),
        (["--model", "m", "--concurrency", "4"], r"--concurrency only apply to a served model: give --base-url"),
        (["--no-logprobs"], r"--logprobs/--no-logprobs only apply to a served model"),
        (["--api-key-env", "KEY"], r"--api-key-env only apply to a served model"),
        (
            ["--base-url", URL, "--model", "m", "--api-key-env", "GUARDRAIL_TEST_UNSET_KEY"],
            r"--api-key-env GUARDRAIL_TEST_UNSET_KEY: no such environment variable is set",
        ),
        (["--base-url", URL, "--model", "m", "--remeasure", "a.json"], r"--remeasure re-reads an artifact's own"),
        (["--base-url", URL, "--model", "m", "--perturbation", "smudge"], r"--perturbation 'smudge': expected auto"),
    ],
)
def test_options_that_do_not_go_together_are_refused(
    arguments: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GUARDRAIL_TEST_UNSET_KEY", raising=False)
    out = tmp_path / "served.json"
    result = runner.invoke(app, ["calibrate", "--out", str(out), *arguments])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: "), result.output
    assert result.output.count("\n") == 1  # one line
    assert re.search(message, result.output), result.output
    assert not out.exists()


def test_too_few_items_are_refused_before_any_request(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (200, 20, 20)).save(tmp_path / "x.png")
    data = tmp_path / "few.jsonl"
    data.write_text('{"image": "x.png", "question": "What colour?", "answer": "red"}\n')
    out = tmp_path / "served.json"
    result = runner.invoke(
        app, ["calibrate", "--base-url", URL, "--model", "m", "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "calibration needs at least 20" in result.output
    assert not out.exists()


def test_a_bad_draw_count_names_the_option(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["calibrate", "--base-url", URL, "--model", "m", "--draws", "99", "--out", str(tmp_path / "a.json")]
    )
    assert result.exit_code == 2, result.output
    assert "--draws/--perturbation/--blackout-probability:" in result.output
    assert "draws" in result.output
