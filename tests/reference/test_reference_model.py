"""The shipped reference model loads with the generic transformers classes, offline, and answers in format."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from guardrail.data import load_easyvqa
from guardrail.reference import reference_model_path

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

STRUCTURED = re.compile(
    r"^<think><vision>I see a (\w+) (\w+)\.</vision><reasoning>[^<]+</reasoning></think> \\boxed\{(\w+)\}$"
)


@pytest.fixture(scope="module")
def loaded() -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = reference_model_path()
    model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = transformers.AutoProcessor.from_pretrained(path)
    return model, processor


def test_shipped_files_are_small_safetensors() -> None:
    path = reference_model_path()
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")), "weights must be safetensors only"
    total = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert total <= 10 * 1024 * 1024, total
    assert json.loads((path / "config.json").read_text())["model_type"] == "llava"


def test_loads_with_generic_auto_classes(loaded: tuple[Any, Any]) -> None:
    model, processor = loaded
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"


def test_answers_a_test_question_in_the_structured_format(loaded: tuple[Any, Any]) -> None:
    model, processor = loaded
    example = next(e for e in load_easyvqa("test") if e.question_type == "color")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[example.image()], text=[prompt], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    text = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    match = STRUCTURED.match(text)
    assert match, text
    assert "<confidence>" not in text  # no verbalized confidence: the model cannot know it
    assert match.group(1) == example.scene.color, text
    assert match.group(3) == example.answer, text


def test_training_record_is_shipped() -> None:
    # How the shipped model was made: `guardrail train reference` with these settings reproduces it.
    record = json.loads((reference_model_path() / "training_config.json").read_text())
    assert record["seed"] == 0
    assert {"epochs", "vision_steps", "negated_fraction", "seconds", "steps"} <= set(record)
