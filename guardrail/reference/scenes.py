"""The scenes reference model: the reference architecture trained on the scenes world (``data/scenes.py``).

The same tiny LLaVA as the easy-VQA reference model (64x64 input, 8 px patches) sees a 256x256 scene downscaled
four times, so its small shapes are a few pixels wide. Its structured answer lists every object with its grid
cell, then reasons from that list::

    <think><vision>I see a red circle at 1 6, a blue triangle at 5 2.</vision>
    <reasoning>I count 1 triangles.</reasoning></think> \\boxed{1}

Training, seeded end to end on CPU:
1. the vision tower learns, per 8-pixel patch, which object's centre lies in it (colour and shape, or none): the
   percept's content and grid cell, cheaply, before any text;
2. teacher-forced answers over seeded scenes, a share of them corrupted (random kind and severity, on the
   full-resolution source) and a share asked about a half-side crop (so a zoomed view of a scene is a picture
   the model knows how to describe).
Counting and comparing are learnt from a budget of examples that leaves honest reasoning errors.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data.easyvqa import COLORS, SHAPES
from ..data.scenes import GRID, TEMPLATES, SceneExample, classify_scene_question, load_scenes, parse_percept
from .build import ModelSize, build_model, build_processor, prompt_text, split_at_tags
from .supervised import Progress, TrainResult, _Batcher, _train_answers, corrupt_some, save_trained, vision_stage

__all__ = ["ScenesTrainConfig", "scenes_answer_text", "scenes_reasoning_text", "train_scenes"]


@dataclass(frozen=True)
class ScenesTrainConfig:
    """Everything that decides the trained scenes model; recorded next to it in ``training_config.json``."""

    seed: int = 0
    n_scenes: int = 6000
    questions_per_scene: int = 3
    crop_probability: float = 0.25
    corrupt_probability: float = 0.2
    vision_steps: int = 1000
    vision_batch_size: int = 64
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    reasoning_weight: float = 2.0
    threads: int = 1
    size: ModelSize = field(default_factory=lambda: ModelSize(vision_hidden=128, vision_layers=3))


def scenes_reasoning_text(percept: str, question: str, answer: str) -> str:
    """The short deduction from a listed percept to the answer, by template."""
    template, slots = classify_scene_question(question)
    objects = parse_percept(percept).objects
    if template == "count_all":
        return f"I count {answer} shapes."
    if template == "count_color":
        return f"I count {answer} {slots['color']} shapes."
    if template == "count_shape":
        return f"I count {answer} {slots['shape']}s."
    if template == "color_of":
        return f"The {slots['shape']} is {answer}."
    if template == "shape_of":
        return f"The {slots['color']} one is a {answer}."
    if template == "exists":
        there = "a" if answer == "yes" else "no"
        return f"There is {there} {slots['color']} {slots['shape']}, so {answer}."
    if template == "more_than":
        first = sum(s == slots["shape"] for _, s, _, _ in objects)
        second = sum(s == slots["shape2"] for _, s, _, _ in objects)
        return f"I count {first} {slots['shape']}s and {second} {slots['shape2']}s, so {answer}."
    a = next(col for c, s, col, _ in objects if (c, s) == (slots["color"], slots["shape"]))
    b = next(col for c, s, col, _ in objects if (c, s) == (slots["color2"], slots["shape2"]))
    return (
        f"The {slots['color']} {slots['shape']} is at {a}, the {slots['color2']} {slots['shape2']} at {b}, so {answer}."
    )


def scenes_answer_text(example: SceneExample) -> str:
    """The full structured answer for a scenes example."""
    percept = example.percept
    reasoning = scenes_reasoning_text(percept, example.question, example.answer)
    return f"<think><vision>{percept}</vision><reasoning>{reasoning}</reasoning></think> \\boxed{{{example.answer}}}"


def _corpus(examples: Iterable[SceneExample]) -> Iterable[str]:
    """Texts to collect the vocabulary from: the examples, and every word a percept or an answer can use."""
    yield "SYSTEM: system\n"
    for e in examples:
        yield from split_at_tags(prompt_text(e.question) + scenes_answer_text(e))
    digits = " ".join(str(d) for d in range(10))
    for color in COLORS:
        for shape in SHAPES:
            yield f"I see a {color} {shape} at {digits}, I count {digits} {shape}s and {color} shapes, so yes no."
            for template in TEMPLATES.values():
                yield prompt_text(template.format(color=color, shape=shape, color2=color, shape2=shape))
    yield "I see nothing. The one is a"


class _SceneBatcher(_Batcher):
    """Scene pictures drawn at full resolution, a share corrupted there, downscaled by the image processor."""

    def pixels(self, examples: Sequence[Any], rng: random.Random) -> Any:
        images = [corrupt_some(self.image(e), rng, self.config.corrupt_probability) for e in examples]
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]


def _cell_targets(example: SceneExample) -> list[int]:
    """Per patch of the model's 8x8 grid: 0 for no object centre, else 1 + colour * 3 + shape of the largest one."""
    targets = [0] * (GRID * GRID)
    visible = example.visible
    for o in sorted(visible.objects, key=lambda o: o.size):  # the largest one last: it wins a shared cell
        col, row = o.cell(visible.width, visible.height)
        targets[row * GRID + col] = 1 + COLORS.index(o.color) * len(SHAPES) + SHAPES.index(o.shape)
    return targets


def _pretrain_vision(
    model: Any, batcher: _SceneBatcher, examples: Sequence[SceneExample], config: ScenesTrainConfig, progress: Any
) -> None:
    """Stage 1: each patch feature learns which object's centre is in its patch (the head is then dropped)."""
    import torch

    classes = 1 + len(COLORS) * len(SHAPES)
    head = torch.nn.Linear(model.config.text_config.hidden_size, classes)
    weights = torch.ones(classes)
    weights[0] = 0.1  # most patches hold no centre: they must not drown the few that do

    def loss_of(batch: Sequence[SceneExample], features: Any) -> Any:
        targets = torch.tensor([_cell_targets(e) for e in batch])
        logits = head(features)  # (batch, 64 patches, classes)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, classes), targets.reshape(-1), weight=weights)

    vision_stage(model, batcher, examples, config, head, loss_of, progress)


def train_scenes(
    out: Path, config: ScenesTrainConfig | None = None, *, progress: Progress | None = None
) -> TrainResult:
    """Trains the scenes reference model from scratch and saves model + processor (safetensors) to ``out``."""
    import torch

    config = config or ScenesTrainConfig()
    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    examples = load_scenes(
        "train",
        config.n_scenes,
        questions_per_scene=config.questions_per_scene,
        crop_probability=config.crop_probability,
        seed=config.seed,
    )
    processor = build_processor((), config.size.patch_size, corpus=_corpus(examples))
    model = build_model(processor, config.size, seed=config.seed)
    model.train()
    batcher = _SceneBatcher(processor, config, answer=scenes_answer_text)
    _pretrain_vision(model, batcher, examples, config, progress)
    step, smoothed = _train_answers(model, batcher, examples, config, progress)
    model.eval()
    seconds = time.perf_counter() - start
    record = {
        **asdict(config),
        "world": "scenes",
        "train_examples": len(examples),
        "steps": step,
        "final_loss": smoothed if not math.isnan(smoothed) else None,
        "seconds": round(seconds, 1),
    }
    save_trained(model, processor, out, record)
    return TrainResult(path=out, seconds=seconds, steps=step, final_loss=smoothed)
