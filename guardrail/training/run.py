"""``train_grpo``: one GRPO training run, the library entry point behind ``guardrail train grpo``.

A run is described by a :class:`GRPORunConfig` (a YAML file on the command line): the model folder or
hub name, the labelled data, the output folder, the calibration options (``CalibrationOptions``), TRL's own
``GRPOConfig`` fields verbatim under ``grpo`` (so every TRL feature, vLLM generation included, is one key away),
and an optional peft ``LoraConfig`` under ``lora``. ``accelerate launch`` of the same command trains on several
GPUs, as TRL does.

Data: a labelled JSONL file (``guardrail.data.labelled``: image, question, answer, optional perception), or
``easyvqa:SPLIT`` (the project's easy-VQA splits under its graded corruptions; ``easyvqa:SPLIT:clean`` without).
With ``pairs`` each row also gets a damaged copy of its image (``paired_images``: a seeded corruption kind at
``pair_severity``), which half of each group's rollouts see (``ConfidenceGRPOTrainer``).

Precision follows the machine unless ``grpo`` sets it: TRL turns bf16 on by default, which ``transformers`` refuses
without a GPU that supports it, so on such a machine the run trains in float32 (``bf16: false``, and
``use_cpu: true`` without any GPU); a ``bf16`` or ``fp16`` the machine cannot run is an :class:`InputError`
naming the key (:func:`precision_defaults`). ``TrainCalibrationConfig`` and ``train_calibration`` are the former
names of :class:`GRPORunConfig` and :func:`train_grpo`, kept for one release.
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
from .reward import RewardWeights

__all__ = [
    "GRPORunConfig",
    "TrainCalibrationConfig",
    "build_dataset",
    "build_dataset_from_items",
    "build_trainer",
    "damaged_copies",
    "load_config",
    "precision_defaults",
    "train_calibration",
    "train_grpo",
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
class GRPORunConfig:
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
    visual_target: str = "batch"
    target_artifact: str | None = None
    own_advantage: bool = False
    ranking: bool = False
    rank_margin: float = 0.1
    pairs: bool = False
    pair_margin: float = 0.1
    pair_severity: int = 5
    collapse_threshold: float = 0.05
    collapse_patience: int = 10

    def options(self) -> Any:
        """The trainer's ``CalibrationOptions`` (imported lazily: it needs TRL)."""
        from .trainer import CalibrationOptions

        # Every option but the weights is a field of this config of the same name (kept TRL-free, so repeated).
        named = {f.name: getattr(self, f.name) for f in fields(CalibrationOptions) if f.name != "weights"}
        return CalibrationOptions(**named, weights=RewardWeights(**dict(self.weights)))

    def grpo_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``trl.GRPOConfig`` for this run: ``grpo`` over the run's seed, no reporting,
        the reward weights of its mode and the precision this machine can train in (:func:`precision_defaults`);
        ``output_dir`` is ``output``."""
        grpo = {"seed": self.seed, "report_to": "none", **precision_defaults(self.grpo), **dict(self.grpo)}
        grpo["reward_weights"] = self.options().reward_weights()
        return {**grpo, "output_dir": self.output}

    def grpo_config(self) -> Any:
        """The ``trl.GRPOConfig`` of this run (imports TRL: seconds). An option TRL or ``transformers`` refuses is
        an :class:`InputError` that names ``grpo`` and says why, not a traceback from deep inside TRL."""
        from trl.trainer.grpo_config import GRPOConfig

        arguments = self.grpo_arguments()
        try:
            return GRPOConfig(**arguments)
        except (TypeError, ValueError) as exc:
            raise InputError(f"grpo: TRL refuses these training options: {exc}") from exc


TrainCalibrationConfig = GRPORunConfig
"""The former name of :class:`GRPORunConfig`, kept for one release."""


def precision_defaults(grpo: Mapping[str, Any]) -> dict[str, Any]:
    """The precision settings a run takes on this machine where ``grpo`` leaves them out.

    With a GPU that supports bf16 (or an XLA device): none, TRL's defaults hold (bf16). Otherwise ``bf16: false``,
    and without any CUDA GPU also ``use_cpu: true``: the run trains in float32 on what the machine has.
    A ``bf16: true`` (or, without CUDA, ``fp16: true``) in ``grpo`` that the machine cannot run is an
    :class:`InputError` naming the key and the fix.
    """
    import torch
    from transformers.utils.import_utils import is_torch_bf16_gpu_available, is_torch_xla_available

    if is_torch_bf16_gpu_available() or is_torch_xla_available():
        return {}
    cuda = torch.cuda.is_available()
    where = "this machine's GPU does not support bf16" if cuda else "this machine has no GPU"
    for key in ("bf16", "bf16_full_eval") if cuda else ("bf16", "bf16_full_eval", "fp16", "fp16_full_eval"):
        if grpo.get(key):
            raise InputError(f"grpo.{key} is true, but {where}: set it to false (or leave it out to train in float32)")
    defaults: dict[str, Any] = {"bf16": False}
    if not cuda:
        defaults.update(use_cpu=True, fp16=False)
    return {key: value for key, value in defaults.items() if key not in grpo}


def load_config(path: str | os.PathLike[str], **overrides: Any) -> GRPORunConfig:
    """Read a YAML run description; ``overrides`` (not ``None``) replace its keys. Problems are ``InputError``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the training config ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: the training config must be a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(GRPORunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    missing = sorted(k for k in ("model", "data", "output") if not data.get(k))
    if missing:
        raise InputError(f"{path}: missing {missing}")
    try:
        return GRPORunConfig(**data)
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


def _row(item: LabelledItem, instruction: str | None, pair_severity: int | None, seed: int) -> dict[str, Any]:
    from ..images import decode_image

    question = item.request.question
    images = [decode_image(block) for block in item.request.images]
    prompt = [{"role": "user", "content": question}]
    if instruction is not None:
        prompt.insert(0, {"role": "system", "content": instruction})
    row = {
        "prompt": prompt,
        "images": images,
        "answer": item.answer,
        "perception": " ".join(item.perception or ()),
    }
    if pair_severity is not None:
        row["paired_images"] = damaged_copies(images, pair_severity, seed=seed)
    return row


def damaged_copies(images: Sequence[Any], severity: int, *, seed: int) -> list[Any]:
    """The images of one row damaged for a clean/corrupted pair: each by a kind of ``data.corruptions.CORRUPTIONS``
    drawn with ``seed``, at ``severity`` (1..5)."""
    from ..data.corruptions import CORRUPTIONS, MAX_SEVERITY, corrupt

    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= MAX_SEVERITY:
        raise InputError(f"`pair_severity` must be an int in 1..{MAX_SEVERITY}, got {severity!r}")
    kinds = sorted(CORRUPTIONS)
    out = []
    for j, image in enumerate(images):
        draw = (seed * 1_000_003 + j * 7_919) % (2**31)
        out.append(corrupt(image, kinds[draw % len(kinds)], severity, seed=draw))
    return out


def build_dataset(config: GRPORunConfig) -> Any:
    """The ``datasets.Dataset`` of conversational prompts with their images and right answers."""
    instruction = DEFAULT_INSTRUCTION if config.instruction == "default" else config.instruction
    items = _items(config.data, limit=config.limit, seed=config.seed)
    return build_dataset_from_items(
        items, instruction, pair_severity=config.pair_severity if config.pairs else None, seed=config.seed
    )


def build_dataset_from_items(
    items: Sequence[LabelledItem], instruction: str | None = None, *, pair_severity: int | None = None, seed: int = 0
) -> Any:
    """The ``datasets.Dataset`` of ``items`` as GRPO prompts (``instruction``: a system prompt, or none); with
    ``pair_severity``, each row's damaged copy in ``paired_images`` (:func:`damaged_copies`, seeded by ``seed`` and
    the row's index)."""
    from datasets import Dataset

    return Dataset.from_list(
        [_row(item, instruction, pair_severity, seed * 100_003 + i) for i, item in enumerate(items)]
    )


def build_trainer(config: GRPORunConfig, *, model: Any = None, processor: Any = None, dataset: Any = None) -> Any:
    """A ready ``ConfidenceGRPOTrainer`` (model and processor loaded from ``config.model``, the data set built from
    ``config.data``, unless given)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .trainer import ConfidenceGRPOTrainer, check_trl_version

    check_trl_version()
    options = config.options()
    args = config.grpo_config()
    if model is None:
        model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=config.dtype)
    if processor is None:
        processor = AutoProcessor.from_pretrained(config.model)  # type: ignore[no-untyped-call]
    peft_config = None
    if config.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**dict(config.lora))
    return ConfidenceGRPOTrainer(
        model=model,
        reward_funcs=options.reward_functions(),
        args=args,
        train_dataset=build_dataset(config) if dataset is None else dataset,
        processing_class=processor,
        peft_config=peft_config,
        calibration=options,
    )


def train_grpo(config: GRPORunConfig, *, model: Any = None, processor: Any = None) -> Path:
    """Train, save the model (or the LoRA adapter) and its processor in ``config.output``; return that folder."""
    trainer = build_trainer(config, model=model, processor=processor)
    trainer.train()
    out = Path(config.output)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(out))
    return out


train_calibration = train_grpo
"""The former name of :func:`train_grpo`, kept for one release."""
