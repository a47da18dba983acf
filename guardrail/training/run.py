"""``train_calibration``: the library entry point behind ``guardrail train-calibration``.

A run is described by a :class:`TrainCalibrationConfig` (a YAML file on the command line): the model folder or
hub name, the labelled data, the output folder, the calibration options (``CalibrationOptions``), TRL's own
``GRPOConfig`` fields verbatim under ``grpo`` (so every TRL feature, vLLM generation included, is one key away),
and an optional peft ``LoraConfig`` under ``lora``. ``accelerate launch`` of the same command trains on several
GPUs, as TRL does.

Data: a labelled JSONL file (``guardrail.data.labelled``: image, question, answer, optional perception), or
``easyvqa:SPLIT`` (the project's easy-VQA splits under its graded corruptions; ``easyvqa:SPLIT:clean`` without).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..data.labelled import LabelledItem
from ..errors import InputError
from .reward import RewardWeights, reward_functions

__all__ = [
    "TrainCalibrationConfig",
    "build_dataset",
    "build_dataset_from_items",
    "build_trainer",
    "load_config",
    "train_calibration",
]

DEFAULT_INSTRUCTION = (
    "Answer the question about the image. First describe what you see inside <vision>...</vision>, then reason "
    "inside <reasoning>...</reasoning>, both inside <think>...</think>. Give the final answer as \\boxed{answer}. "
    "Then rate your confidence as integers from 0 to 10: <confidence><vision_confidence>v</vision_confidence>"
    "<reasoning_confidence>r</reasoning_confidence></confidence>, v for how sure you are of what you saw, r for "
    "how sure you are of your reasoning."
)
"""The system prompt for models that were not trained on the format (``instruction: default``)."""


@dataclass(frozen=True)
class TrainCalibrationConfig:
    """One training run. ``grpo`` holds ``trl.GRPOConfig`` keyword arguments (``output_dir`` is ``output``);
    ``lora`` holds ``peft.LoraConfig`` keyword arguments (``None``: train every weight); ``instruction`` is a
    system prompt (``"default"`` = :data:`DEFAULT_INSTRUCTION`, ``None`` = none); ``limit`` takes that many items.
    """

    model: str
    data: str
    output: str
    mode: str = "decoupled"
    tar: bool = True
    w_min: float = 0.9
    w_max: float = 1.1
    perturbation: str = "blackout"
    blackout_probability: float = 0.8
    patch_size: int | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    instruction: str | None = None
    limit: int | None = None
    seed: int = 0
    grpo: Mapping[str, Any] = field(default_factory=dict)
    lora: Mapping[str, Any] | None = None
    dtype: str = "auto"

    def options(self) -> Any:
        """The trainer's ``CalibrationOptions`` (imported lazily: it needs TRL)."""
        from .trainer import CalibrationOptions

        return CalibrationOptions(
            mode=self.mode,  # type: ignore[arg-type]
            tar=self.tar,
            w_min=self.w_min,
            w_max=self.w_max,
            perturbation=self.perturbation,  # type: ignore[arg-type]
            blackout_probability=self.blackout_probability,
            patch_size=self.patch_size,
            weights=RewardWeights(**dict(self.weights)),
        )


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainCalibrationConfig:
    """Read a YAML run description; ``overrides`` (not ``None``) replace its keys. Problems are ``InputError``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the training config ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: the training config must be a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(TrainCalibrationConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    missing = sorted(k for k in ("model", "data", "output") if not data.get(k))
    if missing:
        raise InputError(f"{path}: missing {missing}")
    try:
        return TrainCalibrationConfig(**data)
    except TypeError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _items(spec: str, *, limit: int | None, seed: int) -> list[LabelledItem]:
    from ..data.labelled import easyvqa_items, read_jsonl

    if spec.startswith("easyvqa:"):
        parts = spec.split(":")
        corruptions: Sequence[str] | None = () if parts[2:] == ["clean"] else None
        return easyvqa_items(parts[1], limit=limit, corruptions=corruptions, seed=seed)
    items = read_jsonl(spec)
    return items if limit is None else items[:limit]


def _row(item: LabelledItem, instruction: str | None) -> dict[str, Any]:
    from ..images import decode_image

    question = item.request.question
    images = [decode_image(block) for block in item.request.images]
    prompt = [{"role": "user", "content": question}]
    if instruction is not None:
        prompt.insert(0, {"role": "system", "content": instruction})
    return {
        "prompt": prompt,
        "images": images,
        "answer": item.answer,
        "perception": " ".join(item.perception or ()),
    }


def build_dataset(config: TrainCalibrationConfig) -> Any:
    """The ``datasets.Dataset`` of conversational prompts with their images and right answers."""
    instruction = DEFAULT_INSTRUCTION if config.instruction == "default" else config.instruction
    return build_dataset_from_items(_items(config.data, limit=config.limit, seed=config.seed), instruction)


def build_dataset_from_items(items: Sequence[LabelledItem], instruction: str | None = None) -> Any:
    """The ``datasets.Dataset`` of ``items`` as GRPO prompts (``instruction``: a system prompt, or none)."""
    from datasets import Dataset

    return Dataset.from_list([_row(item, instruction) for item in items])


def build_trainer(
    config: TrainCalibrationConfig, *, model: Any = None, processor: Any = None, dataset: Any = None
) -> Any:
    """A ready ``CalibrationGRPOTrainer`` (model and processor loaded from ``config.model``, the data set built from
    ``config.data``, unless given)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.trainer.grpo_config import GRPOConfig

    from .trainer import CalibrationGRPOTrainer, check_trl_version

    check_trl_version()
    options = config.options()
    if model is None:
        model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=config.dtype)
    if processor is None:
        processor = AutoProcessor.from_pretrained(config.model)  # type: ignore[no-untyped-call]
    grpo = {"seed": config.seed, "report_to": "none", **dict(config.grpo)}
    grpo["reward_weights"] = options.weights.as_list(options.mode)
    args = GRPOConfig(output_dir=config.output, **grpo)
    peft_config = None
    if config.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**dict(config.lora))
    return CalibrationGRPOTrainer(
        model=model,
        reward_funcs=reward_functions(options.mode),
        args=args,
        train_dataset=build_dataset(config) if dataset is None else dataset,
        processing_class=processor,
        peft_config=peft_config,
        calibration=options,
    )


def train_calibration(config: TrainCalibrationConfig, *, model: Any = None, processor: Any = None) -> Path:
    """Train, save the model (or the LoRA adapter) and its processor in ``config.output``; return that folder."""
    trainer = build_trainer(config, model=model, processor=processor)
    trainer.train()
    out = Path(config.output)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(out))
    return out
