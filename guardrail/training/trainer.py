"""``ConfidenceGRPOTrainer``: TRL's ``GRPOTrainer`` with the reward and the TAR of METHOD.md section 8.

It changes three of TRL's steps, each through a method TRL itself calls (TRL 1.16.0, pinned by the ``train``
extra; ``check_trl_version`` refuses another version rather than train with internals that may have moved):

1. ``_generate`` is wrapped to keep the rollouts' prompt token ids.
2. ``_calculate_rewards``: before the reward functions run, every rollout is re-scored teacher-forced without
   gradient under its original image and under a perturbed copy (patch blackening, METHOD.md section 3), with
   TRL's own ``_get_per_token_logps_and_entropies`` (so any model TRL trains is scored the same way). From the
   log-probs of the ``<vision>`` tokens comes each rollout's visual score ``s``; z-scored over the whole batch
   (gathered across processes) and passed through a sigmoid it is the target ``visual_certainty``, added to the
   rollouts' columns, where the visual Brier reward reads it.
3. ``_generate_and_score_completions``: after TRL computed the group-normalised advantages ``A`` (shape ``(B,)``),
   TAR turns them into per-token advantages ``(B, T)``: on the ``<vision>`` tokens of rollouts with ``A < 0``,
   ``A_t = w_t A`` (``tar.tar_weights``). TRL's ``_compute_loss`` accepts advantages of shape ``(B, T)``.

Everything else (generation with transformers or vLLM, ``accelerate launch`` on many GPUs, LoRA through peft,
the clipped objective, the KL term) is TRL's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from array_api_compat import torch as torch_xp
from PIL import Image
from trl.data_utils import apply_chat_template
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import pad

from ..confidence.perturb import PERTURBATIONS, PerturbationKind, perturb_image
from ..confidence.probe import span_masks
from ..responses import parse_response, token_char_offsets
from .reward import RewardMode, RewardWeights
from .tar import TAR_W_MAX, TAR_W_MIN, batch_sigmoid_z, tar_advantages, tar_weights, visual_scores

__all__ = [
    "TRL_VERSION",
    "CalibrationGRPOTrainer",
    "CalibrationOptions",
    "ConfidenceGRPOTrainer",
    "check_trl_version",
]

TRL_VERSION = "1.16.0"
"""The TRL release whose internals ``ConfidenceGRPOTrainer`` overrides (tested in ``tests/training``)."""


def check_trl_version(version: str | None = None) -> None:
    """Refuse a TRL release other than :data:`TRL_VERSION` (its private methods may differ)."""
    if version is None:
        import trl

        version = str(trl.__version__)
    if version != TRL_VERSION:
        raise RuntimeError(
            f"guardrail's calibration trainer overrides internals of TRL {TRL_VERSION}, found TRL {version}: "
            f"install the extra (pip install 'lvlm-guardrail[train]') or trl=={TRL_VERSION}"
        )


@dataclass(frozen=True)
class CalibrationOptions:
    """What the trainer adds to GRPO.

    ``mode``: ``decoupled`` (the paper's reward) or ``single`` (one verbalized score, the RLCR baseline);
    ``tar``: reweight advantages on vision tokens (``w_min``, ``w_max``); ``perturbation``,
    ``blackout_probability``, ``patch_size`` (pixels; ``None`` = the vision encoder's patch size): the image
    perturbation of the visual target and of TAR; ``weights``: the reward's weights.
    """

    mode: RewardMode = "decoupled"
    tar: bool = True
    w_min: float = TAR_W_MIN
    w_max: float = TAR_W_MAX
    perturbation: PerturbationKind = "blackout"
    blackout_probability: float = 0.8
    patch_size: int | None = None
    weights: RewardWeights = field(default_factory=RewardWeights)

    def __post_init__(self) -> None:
        if self.mode not in ("decoupled", "single"):
            raise ValueError(f"`mode` must be 'decoupled' or 'single', got {self.mode!r}")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(f"`perturbation` must be one of {', '.join(PERTURBATIONS)}, got {self.perturbation!r}")
        if not 0.0 <= self.w_min <= self.w_max:
            raise ValueError(f"TAR weights need 0 <= w_min <= w_max, got {self.w_min}, {self.w_max}")
        if self.tar and self.mode == "single":
            raise ValueError("TAR reweights vision tokens of the decoupled method; use tar=False with mode='single'")

    @property
    def needs_probe(self) -> bool:
        """Whether rollouts are re-scored under a perturbed image (for the visual target or TAR)."""
        return self.mode == "decoupled" or self.tar


@dataclass
class _Probe:
    """Per-token log-probs of one generation batch's rollouts: original ``logp``, perturbed ``logq``, masks."""

    logp: torch.Tensor
    logq: torch.Tensor
    response: torch.Tensor
    vision: torch.Tensor


def _pad_to(tensor: torch.Tensor, width: int, value: float | bool) -> torch.Tensor:
    extra = width - tensor.shape[1]
    if extra <= 0:
        return tensor[:, :width]
    filler = torch.full((tensor.shape[0], extra), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, filler], dim=1)


class ConfidenceGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` plus the visual-certainty target and TAR (see the module docstring).

    Takes every ``GRPOTrainer`` argument, plus ``calibration``. Pass the reward functions of
    ``reward.reward_functions(options.mode)`` and ``GRPOConfig(reward_weights=options.weights.as_list(mode))``
    (``train.build_trainer`` does both).
    """

    def __init__(self, *args: Any, calibration: CalibrationOptions | None = None, **kwargs: Any) -> None:
        check_trl_version()
        self.calibration = calibration or CalibrationOptions()
        self._rollout_prompt_ids: list[list[int]] | None = None
        self._probe: _Probe | None = None
        super().__init__(*args, **kwargs)

    # -- 1. keep the prompt ids -------------------------------------------------------------------------------
    def _generate(self, prompts: list[Any]) -> Any:
        result = super()._generate(prompts)
        self._rollout_prompt_ids = [list(ids) for ids in result[0]]
        return result

    # -- 2. the visual certainty target, before the rewards -------------------------------------------------
    def _calculate_rewards(
        self, inputs: list[dict[str, Any]], prompts: list[Any], completions: list[Any], completion_ids_list: Any
    ) -> torch.Tensor:
        self._probe = None
        if self.calibration.needs_probe:
            probe = self._score_under_perturbation(inputs, prompts, completion_ids_list)
            self._probe = probe
            local = visual_scores(probe.logp, probe.logq, probe.vision)
            gathered = self.accelerator.gather(local)
            targets = batch_sigmoid_z(gathered.float())
            start = self.accelerator.process_index * local.shape[0]
            mine = targets[start : start + local.shape[0]].tolist()
            for example, target in zip(inputs, mine, strict=True):
                example["visual_certainty"] = target
            mode = "train" if self._training else "eval"
            finite = torch.isfinite(gathered)
            if bool(finite.any()):
                self._metrics[mode]["visual_certainty/raw_score_mean"].append(float(gathered[finite].mean()))
        result: torch.Tensor = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return result

    @property
    def _training(self) -> bool:
        model: Any = self.model
        return bool(model.training)

    @property
    def _processor(self) -> Any:
        return self.processing_class

    def _images(self, inputs: Sequence[dict[str, Any]]) -> list[list[Image.Image]] | None:
        if "images" in inputs[0]:
            return [list(x.get("images") or []) for x in inputs]
        if "image" in inputs[0]:
            return [[x["image"]] if x.get("image") is not None else [] for x in inputs]
        return None

    def _patch_size(self) -> int:
        if self.calibration.patch_size is not None:
            return self.calibration.patch_size
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        vision = getattr(config, "vision_config", None)
        return int(getattr(vision, "patch_size", 14) or 14)

    def _perturbed(self, images: list[list[Image.Image]]) -> list[list[Image.Image]]:
        options = self.calibration
        base = int(self.args.seed) * 1_000_003 + int(self.state.global_step) * 10_007
        base += self.accelerator.process_index * 100_003
        patch = self._patch_size()
        return [
            [
                perturb_image(
                    im.convert("RGB"),
                    options.perturbation,
                    patch_size=patch,
                    seed=base + 97 * i + j,
                    probability=options.blackout_probability,
                )
                for j, im in enumerate(row)
            ]
            for i, row in enumerate(images)
        ]

    def _forward_kwargs(self, prompts: list[Any], images: list[list[Image.Image]], completion_shape: Any) -> Any:
        template_kwargs: Any = self.chat_template_kwargs
        texts = [
            apply_chat_template({"prompt": prompt}, self._processor, **template_kwargs)["prompt"] for prompt in prompts
        ]
        batch = self._processor(images=images, text=texts, padding=True, return_tensors="pt")
        device = self.accelerator.device
        kwargs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
        kwargs = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
        for key in ("token_type_ids", "mm_token_type_ids"):
            if key in kwargs:
                kwargs[key] = torch.cat([kwargs[key], kwargs[key].new_zeros(completion_shape)], dim=1)
        return kwargs

    def _vision_masks(self, completion_ids_list: Sequence[Sequence[int]], width: int) -> torch.Tensor:
        tokenizer = getattr(self._processor, "tokenizer", self._processor)

        def decode(batch: list[list[int]]) -> list[str]:
            return [str(t) for t in tokenizer.batch_decode(batch, skip_special_tokens=True)]

        rows = []
        for ids in completion_ids_list:
            ids = list(ids)
            text = decode([ids])[0] if ids else ""
            offsets: list[tuple[int, int]] | None = token_char_offsets(decode, ids)
            if (offsets[-1][1] if offsets else 0) != len(text):
                offsets = None  # cannot place tokens in the text: every token counts
            mask: torch.Tensor = span_masks(parse_response(text), offsets, len(ids), xp=torch_xp).vision
            rows.append(torch.nn.functional.pad(mask, (0, width - len(ids)), value=False))
        return torch.stack(rows).to(self.accelerator.device)

    @torch.no_grad()
    def _score_under_perturbation(
        self, inputs: list[dict[str, Any]], prompts: list[Any], completion_ids_list: Sequence[Sequence[int]]
    ) -> _Probe:
        if self._rollout_prompt_ids is None or len(self._rollout_prompt_ids) != len(completion_ids_list):
            raise RuntimeError("the rollouts' prompt ids were not kept: TRL's generation path changed")
        device = self.accelerator.device
        pad_id = self._tokenizer.pad_token_id
        prompt_ids = pad([torch.tensor(x) for x in self._rollout_prompt_ids], padding_value=pad_id, padding_side="left")
        prompt_mask = pad([torch.ones(len(x), dtype=torch.long) for x in self._rollout_prompt_ids], padding_side="left")
        completion_ids = pad([torch.tensor(list(x) or [pad_id]) for x in completion_ids_list], padding_value=pad_id)
        response = pad([torch.ones(len(x), dtype=torch.bool) for x in completion_ids_list], padding_value=False)
        if response.shape[1] < completion_ids.shape[1]:
            response = _pad_to(response, completion_ids.shape[1], False)
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1).to(device)
        attention = torch.cat([prompt_mask, response.long()], dim=1).to(device)
        width = completion_ids.shape[1]
        images = self._images(inputs)
        batch_size = self.args.per_device_train_batch_size if self._training else None
        variants: list[Any] = [images]
        if images is not None:
            variants.append(self._perturbed(images))
        logps = []
        for variant in variants:
            kwargs = {} if variant is None else self._forward_kwargs(prompts, variant, completion_ids.shape)
            num_images = None if variant is None else [len(row) for row in variant]
            logp, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention, width, batch_size=batch_size, num_images=num_images, **kwargs
            )
            logps.append(logp.float())
        logq = logps[1] if len(logps) > 1 else logps[0]
        return _Probe(
            logp=logps[0],
            logq=logq,
            response=response.to(device),
            vision=self._vision_masks(completion_ids_list, width) & response.to(device),
        )

    # -- 3. TAR on the advantages ---------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)
        probe, self._probe = self._probe, None
        if not self.calibration.tar or probe is None:
            return output
        width = output["completion_ids"].shape[1]
        logp, logq = _pad_to(probe.logp, width, 0.0), _pad_to(probe.logq, width, 0.0)
        response, vision = _pad_to(probe.response, width, False), _pad_to(probe.vision, width, False)
        weights = tar_weights(logp, logq, response, w_min=self.calibration.w_min, w_max=self.calibration.w_max)
        advantages = output["advantages"]
        output["advantages"] = tar_advantages(advantages, weights.weights.to(advantages.dtype), vision)
        mode = "train" if self._training else "eval"
        touched = vision & (advantages < 0).unsqueeze(1)
        if bool(touched.any()):
            self._metrics[mode]["tar/mean_weight"].append(float(weights.weights[touched].mean()))
        self._metrics[mode]["tar/reweighted_tokens"].append(float(touched.sum()))
        return output


CalibrationGRPOTrainer = ConfidenceGRPOTrainer
"""The former name of :class:`ConfidenceGRPOTrainer` ("calibration" also names the package that fits artifacts);
kept for one release."""
