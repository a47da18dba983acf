"""Teaching the reference model its confidence block: the data each step sees, and (slow) the steps themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guardrail.reference.verbalized import (
    ColdStartConfig,
    VerbalizedConfig,
    artifact_items,
    calibration_half,
    cold_start_examples,
    confidence_block,
    grpo_items,
)
from guardrail.responses import parse_response
from tests.support.trl import TRL_DEPRECATIONS


def test_the_block_is_what_the_guard_parses() -> None:
    text = "<think><vision>I see a red circle.</vision><reasoning>r</reasoning></think> \\boxed{red}"
    parsed = parse_response(text + confidence_block(7, 10))
    assert (parsed.vision_confidence, parsed.reasoning_confidence, parsed.problems) == (0.7, 1.0, ())
    with pytest.raises(ValueError, match=r"0\.\.10"):
        confidence_block(11, 0)


def test_grpo_and_the_artifact_never_share_an_image() -> None:
    config = VerbalizedConfig(grpo_items=400)
    trained = {item.tags["image_id"] for item in grpo_items(config)}
    held = {item.tags["image_id"] for item in artifact_items(400)}
    assert len(trained) > 50
    assert len(held) > 50
    assert not trained & held
    assert all(calibration_half(i, 0) for i in trained)
    assert not any(calibration_half(i, 0) for i in held)
    assert [i.request.question for i in grpo_items(config)] == [i.request.question for i in grpo_items(config)]


def test_cold_start_keeps_negated_questions_at_the_reference_models_rate() -> None:
    examples = cold_start_examples(VerbalizedConfig(cold_start=ColdStartConfig(examples=3000)))
    negated = sum(e.question_type == "negated_yes_no" for e in examples) / len(examples)
    assert len(examples) == 3000
    assert 0.03 < negated < 0.08  # a tenth of their 36 % of the training split: about 5 % of what is kept


@pytest.mark.slow
@pytest.mark.filterwarnings(*TRL_DEPRECATIONS)
def test_cold_start_and_grpo_save_a_model_that_writes_the_block(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from guardrail.reference.verbalized import cold_start_reference, grpo_reference

    config = VerbalizedConfig(
        cold_start=ColdStartConfig(examples=1024, epochs=3), grpo_items=8, grpo={"max_steps": 2}, threads=1
    )
    cold = cold_start_reference(tmp_path / "cold", config)
    record = json.loads((cold / "training_config.json").read_text())
    assert record["tokens_added"] == 19
    assert record["base"] == "guardrail/reference/model"  # relative to the repository, never this machine's path
    out = grpo_reference(tmp_path / "grpo", cold, config)
    record = json.loads((out / "training_config.json").read_text())
    assert record["grpo_steps"] == 2
    assert record["stage"] == "grpo"
    assert not (out / "training_args.bin").exists()
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)  # type: ignore[no-untyped-call]
    embeddings: Any = model.get_input_embeddings()
    rows = int(embeddings.weight.shape[0])
    assert rows == len(processor.tokenizer) == 93


def test_the_shipped_verbalized_model_is_small_and_records_how_it_was_made() -> None:
    from guardrail.pretrained import ARTIFACT_FILENAME
    from guardrail.reference import VERBALIZED_MODEL_NAME, reference_model_name, verbalized_model_path

    folder = verbalized_model_path()
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 10 * 2**20
    assert (folder / ARTIFACT_FILENAME).is_file()
    record = json.loads((folder / "training_config.json").read_text())
    assert (record["stage"], record["mode"], record["tar"]) == ("grpo", "decoupled", True)
    assert record["cold_start"]["tokens_added"] == 19
    assert record["cold_start"]["base"] == "guardrail/reference/model"
    assert reference_model_name(folder) == VERBALIZED_MODEL_NAME


@pytest.mark.slow
def test_the_guard_reads_what_the_shipped_verbalized_model_says() -> None:
    from guardrail.data.labelled import easyvqa_items
    from guardrail.pretrained import load_guard
    from guardrail.reference import verbalized_model_path

    guard = load_guard(verbalized_model_path())
    for item in easyvqa_items("test", limit=6, seed=3):
        attempt = guard.run(item.request).attempts[0]
        assert attempt.signals is not None
        assert attempt.confidence is not None
        features = attempt.signals.features
        assert 0.0 <= features["verbalized_vision"] <= 1.0
        assert 0.0 <= features["verbalized_reasoning"] <= 1.0
        assert attempt.signals.visual is not None  # the probe still measures
        assert "verbalized:blend" in attempt.confidence.sources["visual"]


def test_cli_refuses_tar_without_the_decoupled_reward(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from guardrail.cli import _register, app

    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["train", "verbalized", "--out", str(tmp_path), "--mode", "single"])
    assert result.exit_code == 2
    assert "--no-tar" in result.output
    result = runner.invoke(app, ["train", "verbalized", "--out", str(tmp_path), "--mode", "holistic"])
    assert result.exit_code == 2
    assert "decoupled or single" in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.filterwarnings(*TRL_DEPRECATIONS)
def test_the_command_trains_and_calibrates_a_model_the_guard_loads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from guardrail.cli import _register, app
    from guardrail.pretrained import ARTIFACT_FILENAME, load_guard

    _register()
    args = ["--out", str(tmp_path / "m"), "--cold-start-examples", "128", "--grpo-items", "8", "--max-steps", "1"]
    result = CliRunner().invoke(app, ["train", "verbalized", *args, "--calibrate", "60", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / ARTIFACT_FILENAME).is_file()
    guard = load_guard(tmp_path / "m")  # refuses an artifact fitted on another model
    assert guard is not None
