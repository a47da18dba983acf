"""The training command's pieces on a few examples: loss weights, a full (tiny) run, its record."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from guardrail.data.easyvqa import load_easyvqa
from guardrail.reference.build import build_processor
from guardrail.reference.checkpoint import canonical_name, loaded_weights
from guardrail.reference.supervised import TrainConfig, _Batcher, _training_examples, train_reference


def test_reasoning_and_answer_tokens_carry_the_reasoning_weight() -> None:
    config = TrainConfig(reasoning_weight=3.0, max_examples=4)
    processor = build_processor(load_easyvqa(), config.size.patch_size)
    batcher = _Batcher(processor, config)
    examples = _training_examples(config)
    batch = batcher(examples, random.Random(0))
    tokenizer = processor.tokenizer
    reasoning = tokenizer.convert_tokens_to_ids("<reasoning>")
    vision = tokenizer.convert_tokens_to_ids("<vision>")
    for ids, labels, weights in zip(batch["input_ids"], batch["labels"], batch["weights"], strict=True):
        answer = labels != -100
        assert set(weights[~answer].tolist()) == {0.0}  # prompt and padding are not trained on
        start = int((ids == reasoning).nonzero()[0, 0])
        assert int((ids == vision).nonzero()[0, 0]) < start
        assert set(weights[answer & (ids.new_tensor(range(len(ids))) < start)].tolist()) == {1.0}
        assert set(weights[answer & (ids.new_tensor(range(len(ids))) >= start)].tolist()) == {3.0}


def test_max_examples_takes_a_seeded_subset() -> None:
    first = _training_examples(TrainConfig(max_examples=10))
    assert len(first) == 10
    assert [e.question for e in first] == [e.question for e in _training_examples(TrainConfig(max_examples=10))]


def test_a_tiny_training_run_saves_a_loadable_model_and_its_record(tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoProcessor

    config = TrainConfig(vision_steps=2, vision_batch_size=4, epochs=1, batch_size=4, max_examples=8, threads=1)
    seen: list[tuple[str, int, int]] = []
    result = train_reference(tmp_path, config, progress=lambda stage, step, total, _: seen.append((stage, step, total)))
    assert seen[0] == ("vision", 1, 2)
    assert seen[-1] == ("answer", 2, 2)
    assert result.steps == 2
    record = json.loads((tmp_path / "training_config.json").read_text())
    assert record["train_examples"] == 8
    assert record["reasoning_weight"] == config.reasoning_weight
    assert loaded_weights(tmp_path)  # transformers loads it with no missing, unexpected or mismatched weight
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    assert [n for n in names if n.startswith("vision_tower.")]  # saved under the canonical names (checkpoint.py)
    assert all(canonical_name(n) == n for n in names)
    AutoProcessor.from_pretrained(tmp_path)  # type: ignore[no-untyped-call]  # unannotated in transformers
