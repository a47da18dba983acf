"""The scenes model's training pieces on a few scenes: the answer text, the per-patch targets, a tiny full run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from guardrail.data.scenes import GRID, answer_from_percept, load_scenes
from guardrail.reference.checkpoint import loaded_weights
from guardrail.reference.scenes import ScenesTrainConfig, _cell_targets, scenes_answer_text, train_scenes
from guardrail.responses import parse_response


def test_the_answer_text_lists_the_percept_and_reasons_to_the_answer() -> None:
    for example in load_scenes("train", 60, crop_probability=0.3):
        parsed = parse_response(scenes_answer_text(example))
        assert parsed.has_vision_tag
        assert parsed.has_reasoning_tag
        assert parsed.perception_text == example.percept
        assert parsed.answer_text == example.answer
        assert answer_from_percept(parsed.perception_text, example.question) == example.answer


def test_each_object_centre_marks_its_patch_with_its_colour_and_shape() -> None:
    example = load_scenes("train", 1)[0]
    targets = _cell_targets(example)
    assert len(targets) == GRID * GRID
    marked = [t for t in targets if t]
    assert len(marked) <= len(example.scene.objects)
    for o in example.scene.objects:
        col, row = o.cell()
        assert targets[row * GRID + col] > 0


def test_a_tiny_scenes_training_run_saves_a_loadable_model_and_its_record(tmp_path: Path) -> None:
    config = ScenesTrainConfig(n_scenes=4, vision_steps=2, vision_batch_size=4, epochs=1, batch_size=4, threads=1)
    seen: list[tuple[str, int, int]] = []
    result = train_scenes(tmp_path, config, progress=lambda stage, step, total, _: seen.append((stage, step, total)))
    assert seen[0] == ("vision", 1, 2)
    assert seen[-1][0] == "answer"
    record = json.loads((tmp_path / "training_config.json").read_text())
    assert record["world"] == "scenes"
    assert record["n_scenes"] == 4
    assert result.steps == record["steps"]
    assert loaded_weights(tmp_path)
