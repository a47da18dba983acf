"""``guardrail ask --batch``: failed lines are records with ``"status": "error"``, the exit code says whether any
line failed, a summary goes to stderr, and a batch file that cannot be read is reported before the model loads.

In-process through the CLI runner, on a tiny random LLaVA saved to disk (the command's plumbing, not quality).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from guardrail.cli import _register, app
from tests.support.tiny_vlms import save_tiny_llava

runner = CliRunner()
_register()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


def write_batch(folder: Path, items: list[object]) -> Path:
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "red.png")
    (folder / "clear.png").write_bytes(b"")  # and one that cannot be decoded
    path = folder / "questions.jsonl"
    path.write_text("\n".join(i if isinstance(i, str) else json.dumps(i) for i in items) + "\n")
    return path


def run_batch(batch: Path, model_dir: Path) -> tuple[int, list[dict[str, object]], str]:
    result = runner.invoke(app, ["ask", "--batch", str(batch), "--model", str(model_dir)])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return result.exit_code, records, result.stderr


def test_every_line_failing_is_exit_1_with_error_records(model_dir: Path, tmp_path: Path) -> None:
    batch = write_batch(
        tmp_path,
        [{"image": "missing.png", "question": "q"}, "{not json", {"image": "clear.png", "question": "q"}],
    )
    code, records, stderr = run_batch(batch, model_dir)
    assert code == 1
    assert [r["status"] for r in records] == ["error"] * 3
    assert [r["line"] for r in records] == [1, 2, 3]
    messages = [r["error"]["message"] for r in records]  # type: ignore[index]
    assert "missing.png: no such file" in messages[0]
    assert messages[1].startswith(f"{batch}:2: ")
    assert "empty (0 bytes)" in messages[2]
    assert stderr.strip().splitlines()[-1] == (
        f"{batch}: 3 lines: 0 answered (0 accepted, 0 abstained, 0 escalated), 3 failed"
    )


def test_a_clean_batch_is_exit_0_with_a_summary(model_dir: Path, tmp_path: Path) -> None:
    batch = write_batch(tmp_path, [{"image": "red.png", "question": "What colour?"}] * 3)
    code, records, stderr = run_batch(batch, model_dir)
    assert code == 0, stderr
    assert all(r["status"] in {"accepted", "abstained", "escalated"} for r in records)
    summary = stderr.strip().splitlines()[-1]
    assert summary.startswith(f"{batch}: 3 lines: 3 answered (")
    assert summary.endswith(", 0 failed")


@pytest.mark.parametrize("problem", ["missing", "directory", "not utf-8"])
def test_an_unreadable_batch_file_is_exit_2_before_the_model_loads(tmp_path: Path, problem: str) -> None:
    batch = tmp_path / "questions.jsonl"
    if problem == "directory":
        batch.mkdir()
    elif problem == "not utf-8":
        batch.write_bytes(b"\xff\xfe\x00")
    # The model folder does not exist either: the batch file must be the error reported.
    result = runner.invoke(app, ["ask", "--batch", str(batch), "--model", str(tmp_path / "no-model")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {batch}: cannot be read")
    assert "no-model" not in result.stderr
    assert result.stdout == ""


def test_image_and_batch_together_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", "x.png", "q", "--batch", str(tmp_path / "q.jsonl")])
    assert result.exit_code == 2


def test_a_line_with_a_key_other_than_image_and_question_is_an_error_naming_it(model_dir: Path, tmp_path: Path) -> None:
    batch = write_batch(
        tmp_path,
        [
            {"image": "red.png", "images": ["red.png", "red.png"], "question": "What colour?"},
            {"image": "red.png", "question": "What colour?", "id": 7, "answer": "red"},
            {"image": "red.png", "question": "What colour?"},
        ],
    )
    code, records, _ = run_batch(batch, model_dir)
    assert code == 1
    assert [r["status"] for r in records[:2]] == ["error", "error"]
    assert records[2]["status"] != "error"
    messages = [r["error"]["message"] for r in records[:2]]  # type: ignore[index]
    assert messages == [
        f'{batch}:1: unknown key(s) "images": a line has only "image" (one path) and "question" (text)',
        f'{batch}:2: unknown key(s) "answer", "id": a line has only "image" (one path) and "question" (text)',
    ]


def test_a_question_too_long_for_the_model_is_an_error_for_its_line_only(model_dir: Path, tmp_path: Path) -> None:
    long = "What colour is the shape? " * 100  # the tiny model's 512 positions take 488 prompt tokens
    short: object = {"image": "red.png", "question": "What colour?"}
    batch = write_batch(tmp_path, [short, {"image": "red.png", "question": long}, short, short])
    code, records, stderr = run_batch(batch, model_dir)
    assert code == 1
    assert [r["status"] == "error" for r in records] == [False, True, False, False]
    error = records[1]["error"]
    assert isinstance(error, dict)
    assert (error["stage"], error["type"]) == ("input", "InputError")
    assert error["message"].startswith(f"{batch}:2: the question is too long for ")
    assert "over the limit of 488 (the model's 512 positions less 24 kept for the answer" in error["message"]
    assert stderr.strip().splitlines()[-1].endswith(", 1 failed")


def test_one_question_too_long_for_the_model_is_exit_2(model_dir: Path, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    result = runner.invoke(
        app, ["ask", str(tmp_path / "red.png"), "What colour is the shape? " * 100, "--model", str(model_dir)]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: the question is too long for ")
    assert result.stdout == ""
