"""Teaching the reference model its confidence block: the data each step sees, and (slow) the steps themselves."""

from __future__ import annotations

import json
from pathlib import Path

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
from tests.training.test_trainer import TRL_DEPRECATIONS


def test_the_block_is_what_the_guard_parses() -> None:
    text = "<think><vision>I see a red circle.</vision><reasoning>r</reasoning></think> \\boxed{red}"
    parsed = parse_response(text + confidence_block(7, 10))
    assert (parsed.vision_confidence, parsed.reasoning_confidence, parsed.problems) == (0.7, 1.0, ())
    with pytest.raises(ValueError, match="0..10"):
        confidence_block(11, 0)


def test_grpo_and_the_artifact_never_share_an_image() -> None:
    config = VerbalizedConfig(grpo_items=400)
    trained = {item.tags["image_id"] for item in grpo_items(config)}
    held = {item.tags["image_id"] for item in artifact_items(400)}
    assert len(trained) > 50 and len(held) > 50
    assert not trained & held
    assert all(calibration_half(i, 0) for i in trained) and not any(calibration_half(i, 0) for i in held)
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
    out = grpo_reference(tmp_path / "grpo", cold, config)
    record = json.loads((out / "training_config.json").read_text())
    assert record["grpo_steps"] == 2 and record["stage"] == "grpo"
    assert not (out / "training_args.bin").exists()
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)  # type: ignore[no-untyped-call]
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer) == 93
