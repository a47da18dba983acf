"""The reproducible supervised training run of the reference model (``guardrail train reference``).

Teacher-forced next-token training of the structured answer
``<think><vision>I see a red circle.</vision><reasoning>...</reasoning></think> \\boxed{red}`` on the easy-VQA
training split. A share of the images is corrupted (random kind, severity 1-5) while the target still states the
true scene: the model learns to see through mild corruption and, at high severities, really misperceives.

The decision of a yes/no answer is one token ("There is a/no red shape") among some twenty; its loss is weighted
by ``reasoning_weight`` (as are the rest of the reasoning and the boxed answer) so that the comparison of the
question with the model's own ``<vision>`` text gets a fair share of the gradient.

Honest reasoning errors: only ``negated_fraction`` (a tenth) of the negated yes/no questions are used for
training. The negation step ("asked if not, so ...") is then learned from a small budget of examples and stays
imperfect, which gives the reasoning-confidence signals real errors to find. Nothing is faked: the targets are
always right. (With the reasoning weight, seven epochs learn negation perfectly even from 4 % of the negated
questions; three epochs from a tenth leave about 3 % of them wrong while the answer accuracy stays near 98 %.)

Seeded end to end (data order, corruptions, initialisation); single process, CPU, a rich progress bar.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.corruptions import CORRUPTIONS, corrupt
from ..data.easyvqa import Example, load_easyvqa
from .build import IMAGE_TOKEN, ModelSize, answer_text, build_model, build_processor, prompt_text
from .checkpoint import canonicalize_checkpoint

__all__ = [
    "TrainConfig",
    "TrainResult",
    "corrupt_some",
    "save_trained",
    "train_reference",
    "training_examples",
]

Progress = Callable[[str, int, int, float], None]
"""``(stage, step, total_steps, loss) -> None``, called after every optimiser step; stage is "vision" or "answer"."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained model; recorded next to it in ``training_config.json``."""

    seed: int = 0
    vision_steps: int = 6000
    vision_batch_size: int = 64
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    corrupt_probability: float = 0.3
    max_shift: int = 6
    negated_fraction: float = 0.1
    reasoning_weight: float = 4.0
    threads: int = 2
    max_examples: int | None = None  # a seeded subset of the training questions (smoke tests); None: all
    size: ModelSize = field(default_factory=lambda: ModelSize(vision_hidden=128, vision_layers=3))


@dataclass(frozen=True)
class TrainResult:
    """Where the model went, how long training took, and the last smoothed loss."""

    path: Path
    seconds: float
    steps: int
    final_loss: float


def training_examples(seed: int, negated_fraction: float, limit: int | None = None) -> list[Example]:
    """The training questions, negated ones kept at ``negated_fraction``; ``limit``: a seeded subset of them."""
    rng = random.Random(seed)
    examples = load_easyvqa("train")
    kept = [e for e in examples if e.question_type != "negated_yes_no" or rng.random() < negated_fraction]
    return kept if limit is None else rng.sample(kept, min(limit, len(kept)))


def _training_examples(config: TrainConfig) -> list[Example]:
    return training_examples(config.seed, config.negated_fraction, config.max_examples)


def corrupt_some(image: Image.Image, rng: random.Random, probability: float) -> Image.Image:
    """``image``, or with ``probability`` a corruption of it (random kind, severity 1-5): the training draw."""
    if rng.random() < probability:
        kind = rng.choice(sorted(CORRUPTIONS))
        image = corrupt(image, kind, rng.randint(1, 5), seed=rng.randrange(2**31))
    return image


def save_trained(model: Any, processor: Any, out: Path, record: dict[str, Any]) -> None:
    """Save a trained model under the canonical checkpoint names, its processor, and what made it
    (``training_config.json``, with the torch version)."""
    import json

    import torch

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    canonicalize_checkpoint(out)  # the names vLLM and the Hub's LLaVA checkpoints use (checkpoint.py)
    processor.save_pretrained(out)
    record = {**record, "torch": torch.__version__}
    (out / "training_config.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _augment(image: Image.Image, rng: random.Random, max_shift: int) -> Image.Image:
    """A scene-preserving variant: maybe mirrored left-right, shifted by up to ``max_shift`` px.

    3,000 images are few for a vision transformer trained from scratch; mirroring and small shifts keep the
    shape and colour (the labels) and multiply the views. The uncovered border takes the background colour.
    """
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    dx, dy = rng.randint(-max_shift, max_shift), rng.randint(-max_shift, max_shift)
    if dx or dy:
        background = image.getpixel((0, 0))
        image = image.transform(image.size, Image.Transform.AFFINE, (1, 0, dx, 0, 1, dy), fillcolor=background)
    return image


class _Batcher:
    """Turns examples into model inputs: cached decoded images, cached token ids, seeded corruptions."""

    def __init__(self, processor: Any, config: Any, answer: Callable[[Any], str] = answer_text) -> None:
        self.processor = processor
        self.answer = answer
        self.config = config
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.n_image_tokens = (processor.image_processor.crop_size["height"] // processor.patch_size) ** 2
        self._images: dict[str, Image.Image] = {}
        self.reasoning_token_id = self.tokenizer.convert_tokens_to_ids("<reasoning>")
        self._tokens: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def image(self, example: Any) -> Image.Image:
        if example.image_id not in self._images:
            self._images[example.image_id] = example.image()
        return self._images[example.image_id]

    def tokens(self, example: Any) -> tuple[list[int], list[int]]:
        key = (example.question, self.answer(example))
        if key not in self._tokens:
            prompt = self.tokenizer(prompt_text(example.question), add_special_tokens=False).input_ids
            expanded: list[int] = []
            for token in prompt:
                expanded.extend([token] * self.n_image_tokens if token == self.image_token_id else [token])
            answer = [*self.tokenizer(key[1], add_special_tokens=False).input_ids, self.tokenizer.eos_token_id]
            self._tokens[key] = (expanded, answer)
        return self._tokens[key]

    def pixels(self, examples: Sequence[Example], rng: random.Random) -> Any:
        """Pixel values of the examples' images, a share of them corrupted (random kind, severity 1-5)."""
        images = []
        for e in examples:
            image = _augment(self.image(e), rng, self.config.max_shift)
            images.append(corrupt_some(image, rng, self.config.corrupt_probability))
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

    def __call__(self, examples: Sequence[Any], rng: random.Random) -> dict[str, Any]:
        import torch

        pixel_values = self.pixels(examples, rng)
        rows = [self.tokens(e) for e in examples]
        width = max(len(p) + len(a) for p, a in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        weights = torch.zeros((len(rows), width))
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, answer) in enumerate(rows):
            n = len(prompt) + len(answer)
            input_ids[i, :n] = torch.tensor(prompt + answer)
            labels[i, len(prompt) : n] = torch.tensor(answer)
            weights[i, len(prompt) : n] = 1.0
            if self.reasoning_token_id in answer:  # the reasoning and the boxed answer after it
                weights[i, len(prompt) + answer.index(self.reasoning_token_id) : n] = self.config.reasoning_weight
            attention[i, :n] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "pixel_values": pixel_values,
            "labels": labels,
            "weights": weights,
        }


def _weighted_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Next-token cross-entropy over the answer tokens, each weighted (``_Batcher`` sets the weights)."""
    import torch

    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
    ).logits[:, :-1]
    labels, weights = batch["labels"][:, 1:], batch["weights"][:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="none"
    )
    return (per_token * weights.reshape(-1)).sum() / weights.sum()


def _pretrain_vision(
    model: Any, batcher: _Batcher, examples: Sequence[Example], config: TrainConfig, progress: Progress | None
) -> None:
    """Stage 1: the vision tower and projector learn to classify shape and colour (the head is then dropped).

    A tiny vision tower learns shapes slowly through the language-model loss alone; this cheap image-only
    stage (about a tenth of the cost of a full step) gives it the scene first, on clean and corrupted images.
    """
    import torch

    from ..data.easyvqa import COLORS, SHAPES

    head = torch.nn.Linear(model.config.text_config.hidden_size, len(SHAPES) + len(COLORS))
    cross_entropy = torch.nn.functional.cross_entropy

    def loss_of(batch: Sequence[Example], features: Any) -> Any:
        shape = torch.tensor([SHAPES.index(e.scene.shape) for e in batch])
        color = torch.tensor([COLORS.index(e.scene.color) for e in batch])
        logits = head(features.mean(dim=1))
        return cross_entropy(logits[:, : len(SHAPES)], shape) + cross_entropy(logits[:, len(SHAPES) :], color)

    vision_stage(model, batcher, examples, config, head, loss_of, progress)


def vision_stage(
    model: Any,
    batcher: _Batcher,
    examples: Sequence[Any],
    config: Any,
    head: Any,
    loss_of: Callable[[Sequence[Any], Any], Any],
    progress: Progress | None,
) -> None:
    """Stage 1's loop, whatever the world's objective: ``config.vision_steps`` AdamW steps (one-cycle schedule) on
    the vision tower, the projector and ``head``, each on ``config.vision_batch_size`` distinct pictures drawn with
    ``config.seed + 1``; ``loss_of(batch, features)`` scores the patch features (batch, patches, hidden)."""
    import torch

    rng = random.Random(config.seed + 1)
    pictures = {e.image_id: e for e in examples}
    pool = sorted(pictures)
    params = [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]
    optimizer = torch.optim.AdamW([*params, *head.parameters()], lr=config.learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.vision_steps, pct_start=0.1
    )
    for step in range(1, config.vision_steps + 1):
        batch = [pictures[i] for i in rng.sample(pool, config.vision_batch_size)]
        pixels = batcher.pixels(batch, rng)
        features = model.get_image_features(
            pixel_values=pixels, vision_feature_layer=-1, vision_feature_select_strategy="default"
        ).pooler_output
        loss = loss_of(batch, torch.stack(list(features)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if progress is not None:
            progress("vision", step, config.vision_steps, float(loss.detach()))


def _train_answers(
    model: Any, batcher: _Batcher, examples: Sequence[Any], config: Any, progress: Progress | None
) -> tuple[int, float]:
    """Stage 2: the whole model learns the structured answers; returns the steps taken and the smoothed loss.

    ``config`` needs ``seed``, ``epochs``, ``batch_size``, ``learning_rate``, ``weight_decay``, ``warmup_steps``."""
    import torch

    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)

    def schedule(step: int) -> float:
        if step < config.warmup_steps:
            return float((step + 1) / config.warmup_steps)
        done = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step, smoothed = 0, float("nan")
    for _ in range(config.epochs):
        order = list(examples)
        rng.shuffle(order)
        for first in range(0, len(order), config.batch_size):
            batch = batcher(order[first : first + config.batch_size], rng)
            loss = _weighted_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            value = float(loss.detach())
            smoothed = value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * value
            if progress is not None:
                progress("answer", step, total, smoothed)
    return step, smoothed


def train_reference(
    out: Path,
    config: TrainConfig | None = None,
    *,
    progress: Progress | None = None,
) -> TrainResult:
    """Trains the reference model from scratch and saves model + processor (safetensors) to ``out``."""
    import torch

    config = config or TrainConfig()
    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    start = time.perf_counter()

    processor = build_processor(load_easyvqa(), config.size.patch_size)
    model = build_model(processor, config.size, seed=config.seed)
    model.train()
    examples = _training_examples(config)
    batcher = _Batcher(processor, config)
    _pretrain_vision(model, batcher, examples, config, progress)
    step, smoothed = _train_answers(model, batcher, examples, config, progress)
    model.eval()
    seconds = time.perf_counter() - start
    record = {
        **asdict(config),
        "train_examples": len(examples),
        "steps": step,
        "final_loss": smoothed,
        "seconds": round(seconds, 1),
    }
    save_trained(model, processor, out, record)
    return TrainResult(path=out, seconds=seconds, steps=step, final_loss=smoothed)
