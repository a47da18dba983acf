"""``guardrail ask``: single, JSON and batch modes, and clean errors for bad input.

These run on a tiny random LLaVA saved to disk (the command's plumbing); the reference model's quality is checked
by its own tests and benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from guardrail import Guard, GuardResult, Request
from guardrail.cli import _register, app
from guardrail.cli.ask import _print_human, result_record
from tests.support.fakes import FamiliarityCalibrator, ScriptedModel, Step
from tests.support.model_outputs import assert_same_model_output
from tests.support.tiny_vlms import save_tiny_llava

runner = CliRunner()
_register()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (64, 64), (220, 20, 20)).save(path)
    return path


def test_json_output_has_the_documented_fields(model_dir: Path, image: Path) -> None:
    result = runner.invoke(app, ["ask", str(image), "What colour?", "--model", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert {"answer", "perception", "confidence", "decision", "status"} <= set(record)
    assert set(record["confidence"]) == {"visual", "reasoning", "overall", "familiarity", "stability"}
    assert record["decision"]["action"] in {"accept", "abstain", "escalate"}
    assert (record["answer"] is not None) == (record["status"] == "accepted")


def test_human_output_names_every_part(model_dir: Path, image: Path) -> None:
    result = runner.invoke(app, ["ask", str(image), "What colour?", "--model", str(model_dir)])
    assert result.exit_code == 0, result.output
    for label in (
        "answer",
        "perception",
        "visual confidence",
        "reasoning confidence",
        "overall confidence",
        "familiarity",
        "decision",
    ):
        assert label in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"not an image", "not a recognised image format"),
    ],
)
def test_bad_images_are_one_line_errors_with_exit_code_2(
    model_dir: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(app, ["ask", str(path), "What colour?", "--model", str(model_dir)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_decompression_bomb_is_refused(model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 megapixels in a few kilobytes
    assert path.stat().st_size < 200_000
    result = runner.invoke(app, ["ask", str(path), "What colour?", "--model", str(model_dir)])
    assert result.exit_code == 2
    assert "decompression bomb" in result.stderr


def test_missing_model_folder_is_exit_code_2(image: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", str(image), "What colour?", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "error:" in result.stderr


def test_batch_keeps_order_and_isolates_bad_lines(model_dir: Path, image: Path, tmp_path: Path) -> None:
    batch = tmp_path / "questions.jsonl"
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    batch.write_text(
        "\n".join(
            [
                json.dumps({"image": str(image), "question": "What colour?"}),
                "{not json",
                json.dumps({"image": "broken.png", "question": "What shape?"}),
                json.dumps({"question": "no image"}),
                json.dumps({"image": str(image), "question": "What shape?"}),
            ]
        )
        + "\n"
    )
    result = runner.invoke(app, ["ask", "--batch", str(batch), "--model", str(model_dir)])
    assert result.exit_code == 1, result.output  # some lines failed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["status"] == "error" for r in records] == [False, True, True, True, False]
    assert "5 lines: 2 answered" in result.stderr
    assert "3 failed" in result.stderr
    assert records[1]["error"]["message"].startswith(f"{batch}:2: ")
    assert "broken.png" in records[2]["error"]["message"]
    assert records[4]["confidence"].keys() == {"visual", "reasoning", "overall", "familiarity", "stability"}


def test_batched_lines_are_answered_as_one_by_one(model_dir: Path, image: Path, tmp_path: Path) -> None:
    batch = tmp_path / "many.jsonl"
    questions = ["What colour?", "What shape is it?", "Is it red?", "Is there a circle?", "What colour is it?"]
    lines = [json.dumps({"image": str(image), "question": q}) for q in questions]
    batch.write_text("\n".join([*lines[:2], "{broken", *lines[2:]]) + "\n")
    one_by_one = runner.invoke(app, ["ask", "--batch", str(batch), "--model", str(model_dir), "--batch-size", "1"])
    together = runner.invoke(app, ["ask", "--batch", str(batch), "--model", str(model_dir), "--batch-size", "4"])
    assert one_by_one.exit_code == together.exit_code == 1  # the broken line
    alone = [json.loads(line) for line in one_by_one.stdout.splitlines()]
    batched = [json.loads(line) for line in together.stdout.splitlines()]
    assert [r["line"] for r in batched] == [1, 2, 3, 4, 5, 6]
    # status, answers, decisions and errors exactly, confidences within the model-output tolerance, timings skipped
    assert_same_model_output(batched, alone, name="batched")


def test_image_and_batch_together_is_a_usage_error(image: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", str(image), "q", "--batch", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2
    assert "not both" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# The record and table themselves, on a scripted guard whose calibrator measures familiarity


def _unfamiliar_result(familiarity: float | None) -> GuardResult:
    model = ScriptedModel(steps=(Step(answer="red", visual=0.99, reasoning=0.99),))
    guard = Guard(model, estimator=model, policy="default", calibrator=FamiliarityCalibrator(familiarity))
    return guard.run(Request.from_question("What colour?", [image_bytes()]))


def image_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (220, 20, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_record_shows_familiarity_and_the_unfamiliar_input_decision() -> None:
    record = result_record(_unfamiliar_result(0.002))
    assert list(record["confidence"]) == ["visual", "reasoning", "overall", "familiarity", "stability"]
    assert record["confidence"]["familiarity"] == 0.002
    assert record["status"] == "abstained"
    assert record["answer"] is None
    assert record["decision"] == {
        "action": "abstain",
        "rule": "rules[1] unfamiliar-input",
        "reason": "familiarity 0.002 < 0.01",
    }
    json.dumps(record)


def test_an_unmeasured_familiarity_is_null_in_json_and_unknown_in_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    record = result_record(_unfamiliar_result(None))
    assert record["confidence"]["familiarity"] is None
    assert record["status"] == "accepted"
    _print_human(record, policy="default")
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line for line in lines if line.startswith("familiarity")]
    assert row.split() == ["familiarity", "unknown"]
    assert [line.split()[0] for line in lines if "confidence" in line] == ["visual", "reasoning", "overall"]


def test_the_table_shows_a_measured_familiarity(capsys: pytest.CaptureFixture[str]) -> None:
    _print_human(result_record(_unfamiliar_result(0.002)), policy="default")
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("familiarity")]
    assert row.split() == ["familiarity", "0.002"]
    assert "rules[1] unfamiliar-input" in out


def test_tiny_values_keep_their_significant_digits() -> None:
    from guardrail.cli.ask import _fmt

    assert [_fmt(v) for v in (None, 0.0, 0.0004, 0.002, 0.5, 1.0)] == [
        "unknown", "0.000", "0.0004", "0.002", "0.500", "1.000"
    ]  # fmt: skip
