"""The reference model learns to say how sure it is (``guardrail train verbalized``).

Three steps, seeded end to end, on CPU:

1. **Vocabulary.** The confidence tags and the scores 0..10 become whole tokens (``training.extend_vocabulary``):
   the word-level vocabulary of the reference model has no digits, so it could not write a score at all.
2. **Cold start.** A short supervised pass on the full output format (METHOD.md section 2): the structured answer
   the reference model was trained on (``train.py``: training questions, a share of the images corrupted, a tenth
   of the negated questions), followed by a confidence block whose two scores are drawn uniformly from 0..10.
   The whole response is trained: the block alone teaches the tied output embeddings to write the new tags
   everywhere, and the model's own greedy answers as targets cost four points of accuracy (they reinforce its
   mistakes). The uniform scores teach the format and nothing about confidence, so that GRPO starts with scores
   that differ within every group of rollouts and everything the model learns about its confidence comes from
   the reward.
3. **GRPO** with the paper's reward and TAR (``training.train_grpo``, TRL) on the corrupted calibration
   split, where the model errs often enough to learn from. Only the images of one half of that split
   (``grpo_half``) are used; the other half is left for fitting the calibration artifact, which must not see the
   rollouts' questions.

``mode``/``tar`` select the variants of the paper's table (``bench/vl_calibration.py``): ``single`` (one
verbalized score, Brier against correctness), ``decoupled`` without TAR, and the full method. Issue 30's switches
(``training.trainer``; each off by default): ``visual_target="guard"`` (the shipped model's artifact gives the
visual target), ``own_advantage``, ``ranking`` and ``pairs`` (a damaged copy of each image at ``pair_severity``).
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._paths import recorded_path
from ..data.easyvqa import Example
from ..data.labelled import LabelledItem
from .supervised import corrupt_some, save_trained, training_examples

__all__ = [
    "ColdStartConfig",
    "VerbalizedConfig",
    "artifact_items",
    "calibration_half",
    "cold_start",
    "cold_start_examples",
    "cold_start_reference",
    "confidence_block",
    "grpo_items",
    "grpo_reference",
    "train_verbalized_reference",
]

SHIPPED_ARTIFACT = "guardrail_calibration.json"
"""The shipped reference model's calibration artifact, beside it (``pretrained.ARTIFACT_FILENAME``): with
``visual_target="guard"`` GRPO's visual target is that artifact's calibrated visual confidence."""

Progress = Callable[[str, int, int, float], None]
"""``(stage, step, total_steps, loss) -> None``; stage is "cold-start"."""


def confidence_block(vision: int, reasoning: int) -> str:
    """``<confidence><vision_confidence>v</vision_confidence><reasoning_confidence>r</reasoning_confidence>
    </confidence>`` with integer scores 0..10 (no spaces: the word-level vocabulary has no lone space)."""
    if not (0 <= vision <= 10 and 0 <= reasoning <= 10):
        raise ValueError(f"scores must be integers 0..10, got {vision}, {reasoning}")
    return (
        f"<confidence><vision_confidence>{vision}</vision_confidence>"
        f"<reasoning_confidence>{reasoning}</reasoning_confidence></confidence>"
    )


@dataclass(frozen=True)
class ColdStartConfig:
    """The supervised cold start: how many training questions, how long, how fast."""

    examples: int = 4096
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 2e-3
    corrupt_probability: float = 0.3
    negated_fraction: float = 0.1


@dataclass(frozen=True)
class VerbalizedConfig:
    """Everything that decides the trained model; recorded next to it in ``training_config.json``.

    ``grpo`` holds ``trl.GRPOConfig`` keyword arguments over the defaults of :data:`GRPO_DEFAULTS`.
    """

    seed: int = 0
    mode: str = "decoupled"
    tar: bool = True
    grpo_items: int = 1536
    grpo_half: int = 0
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    grpo: dict[str, Any] = field(default_factory=dict)
    threads: int = 2
    visual_target: str = "batch"
    own_advantage: bool = False
    ranking: bool = False
    pairs: bool = False
    pair_severity: int = 5


GRPO_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 32,
    "num_generations": 8,
    "max_completion_length": 48,
    "temperature": 1.0,
    "learning_rate": 1e-4,
    "beta": 0.04,
    "num_train_epochs": 1,
    "lr_scheduler_type": "constant_with_warmup",
    "warmup_steps": 10,
    "logging_steps": 10,
    "save_strategy": "no",
    "use_cpu": True,
    "report_to": "none",
    "disable_tqdm": True,
}
"""GRPO on CPU: 4 questions x 8 rollouts a step, one pass over the questions, a KL term to the cold-started model.

Tried on seed 0 (384 steps): learning rate 3e-4 without the KL term cost 10 points of accuracy in 192 steps;
1e-4 kept it with or without the KL term (0.856 and 0.859 against 0.857 after the cold start on 512 test
questions)."""


def calibration_half(image_id: str, half: int) -> bool:
    """Whether a calibration image belongs to ``half`` (0 or 1): a fixed hash of its id, independent of seeds."""
    import hashlib

    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    return digest[0] % 2 == half


def cold_start(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    config: ColdStartConfig,
    *,
    seed: int,
    progress: Progress | None = None,
) -> float:
    """Teach ``model`` the full format with uniform scores (see the module docstring); the last smoothed loss."""
    import torch

    from .build import answer_text, prompt_text

    rng = random.Random(seed)
    tokenizer = processor.tokenizer
    eos = tokenizer.eos_token_id
    rows: list[tuple[list[int], int]] = []  # (full ids, index of the first trained token)
    images = []
    for example in examples:
        image = corrupt_some(example.image(), rng, config.corrupt_probability)
        images.append(image)
        head = processor(images=[image], text=[prompt_text(example.question)], return_tensors="pt")
        head_ids = head["input_ids"][0].tolist()
        block = confidence_block(rng.randint(0, 10), rng.randint(0, 10))
        tail = tokenizer(answer_text(example) + block, add_special_tokens=False).input_ids
        rows.append(([*head_ids, *tail, eos], len(head_ids)))
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    steps = math.ceil(len(rows) / config.batch_size) * config.epochs
    pad = tokenizer.pad_token_id
    model.train()
    step, smoothed = 0, float("nan")
    order = list(range(len(rows)))
    for _ in range(config.epochs):
        rng.shuffle(order)
        for first in range(0, len(order), config.batch_size):
            chosen = order[first : first + config.batch_size]
            width = max(len(rows[i][0]) for i in chosen)
            input_ids = torch.full((len(chosen), width), pad, dtype=torch.long)
            labels = torch.full((len(chosen), width), -100, dtype=torch.long)
            attention = torch.zeros((len(chosen), width), dtype=torch.long)
            for r, i in enumerate(chosen):
                ids, start = rows[i]
                input_ids[r, : len(ids)] = torch.tensor(ids)
                labels[r, start : len(ids)] = torch.tensor(ids[start:])
                attention[r, : len(ids)] = 1
            loss = model(
                input_ids=input_ids, attention_mask=attention, pixel_values=pixel_values[chosen], labels=labels
            ).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            value = float(loss.detach())
            smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value
            if progress is not None:
                progress("cold-start", step, steps, smoothed)
    model.eval()
    return smoothed


def _calibration_sample(n: int, half: int, *, corruption_seed: int, seed: int) -> list[LabelledItem]:
    """``n`` corrupted calibration questions (corruptions drawn with ``corruption_seed``) on images of ``half``."""
    from ..data.labelled import easyvqa_items

    items = easyvqa_items("calibration", seed=corruption_seed)
    chosen = [item for item in items if calibration_half(item.tags["image_id"], half)]
    return random.Random(seed).sample(chosen, min(n, len(chosen)))


def grpo_items(config: VerbalizedConfig) -> list[LabelledItem]:
    """The corrupted calibration questions GRPO learns from: a seeded sample of the images of ``grpo_half``."""
    return _calibration_sample(
        config.grpo_items, config.grpo_half, corruption_seed=config.seed + 1000, seed=config.seed
    )


def cold_start_examples(config: VerbalizedConfig) -> list[Example]:
    """A seeded sample of the training questions, negated ones kept at the reference model's own rate."""
    cold = config.cold_start
    return training_examples(config.seed, cold.negated_fraction, cold.examples)


def cold_start_reference(
    out: Path, config: VerbalizedConfig | None = None, *, base: Path | None = None, progress: Progress | None = None
) -> Path:
    """Steps 1 and 2: the reference model (``base``: the shipped one) with the new tokens and the format; saved."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..training.vocab import extend_vocabulary
    from . import reference_model_path

    config = config or VerbalizedConfig()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    base = base or reference_model_path()
    start = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(base)
    processor = AutoProcessor.from_pretrained(base)  # type: ignore[no-untyped-call]
    added = extend_vocabulary(model, processor)
    loss = cold_start(
        model, processor, cold_start_examples(config), config.cold_start, seed=config.seed, progress=progress
    )
    record = {
        "stage": "cold_start",
        "base": recorded_path(base),
        "seed": config.seed,
        "cold_start": asdict(config.cold_start),
        "tokens_added": added,
        "final_loss": loss,
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_trained(model, processor, out, record)
    return out


def grpo_reference(out: Path, start: Path, config: VerbalizedConfig | None = None) -> Path:
    """Step 3: GRPO from the cold-started model in ``start`` (``config.mode``, ``config.tar``); saved in ``out``."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..training.run import GRPORunConfig, build_dataset_from_items, build_trainer

    config = config or VerbalizedConfig()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    began = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(start)
    processor = AutoProcessor.from_pretrained(start)  # type: ignore[no-untyped-call]
    from . import reference_model_path

    grpo = {**GRPO_DEFAULTS, **config.grpo}
    guard = config.visual_target == "guard"
    with tempfile.TemporaryDirectory() as scratch:
        run = GRPORunConfig(
            model=str(start),
            data="",
            output=scratch,
            mode=config.mode,
            tar=config.tar,
            seed=config.seed,
            grpo=grpo,
            visual_target=config.visual_target,
            target_artifact=str(reference_model_path() / SHIPPED_ARTIFACT) if guard else None,
            own_advantage=config.own_advantage,
            ranking=config.ranking,
            pairs=config.pairs,
            pair_severity=config.pair_severity,
        )
        dataset = build_dataset_from_items(
            grpo_items(config),
            instruction=None,
            pair_severity=config.pair_severity if config.pairs else None,
            seed=config.seed,
        )
        trainer = build_trainer(run, model=model, processor=processor, dataset=dataset)
        trainer.train()
    model = trainer.model
    model.eval()
    cold = json.loads((start / "training_config.json").read_text(encoding="utf-8"))
    record = {
        "stage": "grpo",
        "cold_start": cold,
        **{k: v for k, v in asdict(config).items() if k != "cold_start"},
        "grpo": grpo,
        "grpo_steps": int(trainer.state.global_step),
        "log": [h for h in trainer.state.log_history if "reward" in h],
        "collapse_alarm": {
            "threshold": trainer.collapse_alarm.threshold,
            "patience": trainer.collapse_alarm.patience,
            "fired_at_steps": list(trainer.collapse_alarm.fired_at),
        },
        "seconds": round(time.perf_counter() - began, 1),
    }
    save_trained(model, processor, out, record)
    return out


def train_verbalized_reference(
    out: Path, config: VerbalizedConfig | None = None, *, base: Path | None = None, progress: Progress | None = None
) -> Path:
    """All three steps from ``base`` (the shipped reference model); the trained model is saved in ``out``."""
    config = config or VerbalizedConfig()
    with tempfile.TemporaryDirectory() as scratch:
        start = cold_start_reference(Path(scratch) / "cold-start", config, base=base, progress=progress)
        return grpo_reference(out, start, config)


def artifact_items(n: int, *, seed: int = 0, grpo_half: int = 0) -> list[LabelledItem]:
    """Corrupted calibration questions for fitting a trained model's artifact: only images GRPO never saw."""
    return _calibration_sample(n, 1 - grpo_half, corruption_seed=seed, seed=seed)
