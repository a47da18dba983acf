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

The switches of issue 30 (each off by default, so that the defaults train METHOD.md section 8 as written):

- ``visual_target="guard"``: the target is the guard's calibrated visual confidence of the rollout
  (``targets.GuardVisualTarget``, from a calibration artifact), measured under the artifact's own perturbation;
- ``own_advantage``: the confidence block's tokens get the group advantage of the calibration terms (calibration
  Brier, visual Brier, ranking, pair), every other token that of the answer terms (correctness, format), with TAR
  on the answer's advantage (``ranking.split_advantages``);
- ``ranking``: a reward term ``ranking`` (``ranking.ranking_rewards``), computed here once the rollouts of every
  process are gathered;
- ``pairs``: rows with a ``paired_images`` column (a damaged copy of the row's clean image) give half of each
  group's rollouts the damaged copy; a reward term ``pair`` (``ranking.pair_rewards``) asks the visual
  confidence to drop on it.

Every step also logs the spread (std) of the stated overall confidences and their share at the ceiling
(``confidence/stated_std``, ``confidence/ceiling_share``), and ``collapse.CollapseAlarm`` warns when the spread
stays below ``collapse_threshold`` for ``collapse_patience`` steps.

Everything else (generation with transformers or vLLM, ``accelerate launch`` on many GPUs, LoRA through peft,
the clipped objective, the KL term) is TRL's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from array_api_compat import torch as torch_xp
from PIL import Image
from trl.data_utils import apply_chat_template
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import pad

from ..confidence.perturb import PERTURBATIONS, PerturbationKind, perturb_image
from ..confidence.probe import span_masks
from ..responses import CharSpan, char_span_to_token_span, parse_response, token_char_offsets
from .collapse import CollapseAlarm, stated_spread
from .ranking import group_advantages, pair_rewards, ranking_rewards, split_advantages
from .reward import RewardMode, RewardWeights, _text, harmonic_confidence, reward_functions
from .tar import TAR_W_MAX, TAR_W_MIN, batch_sigmoid_z, tar_advantages, tar_weights, visual_scores
from .targets import GuardVisualTarget, visual_statistic

__all__ = [
    "TRL_VERSION",
    "CalibrationGRPOTrainer",
    "CalibrationOptions",
    "ConfidenceGRPOTrainer",
    "check_trl_version",
    "confidence_block_span",
]

VisualTargetKind = Literal["batch", "guard"]
ANSWER_TERMS = ("correctness", "format")
"""The reward terms whose advantage the answer's tokens get under ``own_advantage``; the rest are calibration."""


def confidence_block_span(text: str) -> CharSpan | None:
    """Where the confidence block starts, to the end of ``text``: from ``<confidence>`` (or, without it, the first
    score tag); ``None`` when the response states no confidence."""
    starts = [
        i for i in (text.find(tag) for tag in ("<confidence", "<vision_confidence", "<reasoning_confidence")) if i >= 0
    ]
    return (min(starts), len(text)) if starts else None


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

    Issue 30's switches (see the module docstring): ``visual_target`` (``"batch"``: METHOD.md section 8's
    batch-z-scored target; ``"guard"``: the calibrated visual confidence of ``target_artifact``, whose own probe
    kind and probability then replace ``perturbation`` and ``blackout_probability``), ``own_advantage``,
    ``ranking`` (``rank_margin``), ``pairs`` (``pair_margin``); the collapse alarm's ``collapse_threshold`` and
    ``collapse_patience``.
    """

    mode: RewardMode = "decoupled"
    tar: bool = True
    w_min: float = TAR_W_MIN
    w_max: float = TAR_W_MAX
    perturbation: PerturbationKind = "blackout"
    blackout_probability: float = 0.8
    patch_size: int | None = None
    weights: RewardWeights = field(default_factory=RewardWeights)
    visual_target: VisualTargetKind = "batch"
    target_artifact: str | None = None
    own_advantage: bool = False
    ranking: bool = False
    rank_margin: float = 0.1
    pairs: bool = False
    pair_margin: float = 0.1
    collapse_threshold: float = 0.05
    collapse_patience: int = 10

    def __post_init__(self) -> None:
        if self.mode not in ("decoupled", "single"):
            raise ValueError(f"`mode` must be 'decoupled' or 'single', got {self.mode!r}")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(f"`perturbation` must be one of {', '.join(PERTURBATIONS)}, got {self.perturbation!r}")
        if not 0.0 <= self.w_min <= self.w_max:
            raise ValueError(f"TAR weights need 0 <= w_min <= w_max, got {self.w_min}, {self.w_max}")
        if self.tar and self.mode == "single":
            raise ValueError("TAR reweights vision tokens of the decoupled method; use tar=False with mode='single'")
        if self.visual_target not in ("batch", "guard"):
            raise ValueError(f"`visual_target` must be 'batch' or 'guard', got {self.visual_target!r}")
        if self.visual_target == "guard" and not self.target_artifact:
            raise ValueError(
                "`visual_target='guard'` needs `target_artifact`: the calibration artifact to read it from"
            )
        if self.mode == "single" and (self.pairs or self.visual_target == "guard"):
            raise ValueError("`pairs` and `visual_target='guard'` train the visual score of the decoupled method")
        for name in ("rank_margin", "pair_margin", "collapse_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value}")
        if self.collapse_patience < 1:
            raise ValueError(f"`collapse_patience` must be an int >= 1, got {self.collapse_patience}")

    def reward_functions(self) -> list[Any]:
        """The TRL reward functions of these options (``reward.reward_functions``)."""
        return reward_functions(self.mode, ranking=self.ranking, pairs=self.pairs)

    def reward_weights(self) -> list[float]:
        """``GRPOConfig.reward_weights`` for :meth:`reward_functions`."""
        return self.weights.as_list(self.mode, ranking=self.ranking, pairs=self.pairs)

    def term_names(self) -> list[str]:
        """The names of the reward terms, in the order of :meth:`reward_functions`."""
        return [f.__name__ for f in self.reward_functions()]

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


@dataclass
class _Scored:
    """What ``_calculate_rewards`` keeps for the advantages: every process's rewards ``(N, terms)``, the local
    rollouts' confidence-block masks ``(B, T)`` and the local slice of the gathered rows."""

    rewards: torch.Tensor
    confidence: torch.Tensor
    local: slice


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
        options = self.calibration
        self._guard_target = (
            GuardVisualTarget.from_artifact(options.target_artifact)
            if options.visual_target == "guard" and options.target_artifact
            else None
        )
        self._rollout_prompt_ids: list[list[int]] | None = None
        self._probe: _Probe | None = None
        self._scored: _Scored | None = None
        self.collapse_alarm = CollapseAlarm(options.collapse_threshold, options.collapse_patience)
        super().__init__(*args, **kwargs)
        terms = [getattr(f, "__name__", "") for f in self.reward_funcs]
        if options.own_advantage or options.ranking or options.pairs:
            if terms != options.term_names():
                raise ValueError(
                    f"the reward functions {terms} are not those of the calibration options {options.term_names()}: "
                    "pass `calibration.reward_functions()` (the group terms and the split advantage need them)"
                )
            if self.multi_objective_aggregation != "sum_then_normalize" or self.scale_rewards == "batch":
                raise ValueError(
                    "`own_advantage` needs multi_objective_aggregation='sum_then_normalize' and scale_rewards "
                    f"'group' or 'none', got {self.multi_objective_aggregation!r}, {self.scale_rewards!r}"
                )
        if options.pairs and self._group_size(True) % 2:
            raise ValueError(
                f"`pairs` needs an even num_generations (half clean, half damaged), got {self.num_generations}"
            )

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
        self._scored = None
        mode = "train" if self._training else "eval"
        start = self.accelerator.process_index * len(inputs)
        local_rows = slice(start, start + len(inputs))
        if self.calibration.needs_probe:
            probe = self._score_under_perturbation(inputs, prompts, completion_ids_list)
            self._probe = probe
            if self._guard_target is not None:
                weight = self._guard_target.grounding_weight
                statistic = visual_statistic(probe.logp, probe.logq, probe.vision, grounding_weight=weight)
                gathered = self.accelerator.gather(statistic)
                targets = self._guard_target(gathered.float())
            else:
                gathered = self.accelerator.gather(visual_scores(probe.logp, probe.logq, probe.vision))
                targets = batch_sigmoid_z(gathered.float())
            for example, target in zip(inputs, targets[local_rows].tolist(), strict=True):
                example["visual_certainty"] = target
            finite = torch.isfinite(gathered)
            if bool(finite.any()):
                self._metrics[mode]["visual_certainty/raw_score_mean"].append(float(gathered[finite].mean()))
                self._metrics[mode]["visual_certainty/target_mean"].append(float(targets[finite].mean()))
        rewards: torch.Tensor = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        stated = self._stated(inputs, completions)  # (N, 3): v, r, damaged (NaN: none)
        overall = self._overall(stated)
        options, terms = self.calibration, [getattr(f, "__name__", "") for f in self.reward_funcs]
        size = self._group_size(mode == "train")
        if options.ranking and "ranking" in terms:
            correct = rewards[:, terms.index("correctness")]
            rewards[:, terms.index("ranking")] = ranking_rewards(overall, correct, size, margin=options.rank_margin)
        if options.pairs and "pair" in terms:
            rewards[:, terms.index("pair")] = pair_rewards(stated[:, 0], stated[:, 2], size, margin=options.pair_margin)
        self._watch_spread(overall, mode)
        if options.own_advantage:
            masks = self._span_masks(completion_ids_list, max((len(x) for x in completion_ids_list), default=0))
            self._scored = _Scored(rewards, masks[1], local_rows)
        return rewards

    def _stated(self, inputs: Sequence[dict[str, Any]], completions: Sequence[Any]) -> torch.Tensor:
        """Every process's rollouts' stated ``v``, ``r`` and pair role (1 damaged, 0 clean, NaN none): ``(N, 3)``."""
        rows = []
        for example, completion in zip(inputs, completions, strict=True):
            parsed = parse_response(_text(completion))
            v, r = parsed.vision_confidence, parsed.reasoning_confidence
            role = example.get("pair_role")
            rows.append([math.nan if x is None else float(x) for x in (v, r, role)])
        local = torch.tensor(rows, dtype=torch.float32, device=self.accelerator.device).reshape(-1, 3)
        gathered: torch.Tensor = self.accelerator.gather(local)
        return gathered

    def _group_size(self, training: bool) -> int:
        """Rollouts per prompt in training or evaluation (TRL types them optional; it always sets them)."""
        size = self.num_generations if training else self.num_generations_eval
        if size is None:
            raise ValueError("num_generations is not set: the group size of GRPO is unknown")
        return int(size)

    def _overall(self, stated: torch.Tensor) -> torch.Tensor:
        """The stated overall confidence ``(N,)``: ``c_hm`` (``r`` in single mode); NaN where not stated."""
        if self.calibration.mode == "single":
            return stated[:, 1].clone()
        values = [
            math.nan if math.isnan(v) or math.isnan(r) else harmonic_confidence(v, r) for v, r in stated[:, :2].tolist()
        ]
        return torch.tensor(values, dtype=stated.dtype, device=stated.device)

    def _watch_spread(self, overall: torch.Tensor, mode: str) -> None:
        """Log the spread of the stated confidences and their share at the ceiling; tell the collapse alarm."""
        spread, ceiling = stated_spread(overall)
        self._metrics[mode]["confidence/stated_std"].append(spread)
        self._metrics[mode]["confidence/ceiling_share"].append(ceiling)
        if mode == "train" and self.collapse_alarm.update(spread, int(self.state.global_step)):
            self._metrics[mode]["confidence/collapse_alarm"].append(1.0)

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
        kind, probability = options.perturbation, options.blackout_probability
        if self._guard_target is not None:  # the statistic the artifact calibrates is measured under its own probe
            kind, probability = self._guard_target.probe.perturbation, self._guard_target.probe.blackout_probability
        base = int(self.args.seed) * 1_000_003 + int(self.state.global_step) * 10_007
        base += self.accelerator.process_index * 100_003
        patch = self._patch_size()
        return [
            [
                perturb_image(
                    im.convert("RGB"),
                    kind,
                    patch_size=patch,
                    seed=base + 97 * i + j,
                    probability=probability,
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

    def _span_masks(
        self, completion_ids_list: Sequence[Sequence[int]], width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(vision, confidence)`` token masks ``(B, width)`` of the rollouts: the ``<vision>`` span, and the
        confidence block to the end of the response (``confidence_block_span``). A response whose tokens cannot
        be placed in its text counts every token as vision and none as confidence."""
        tokenizer = getattr(self._processor, "tokenizer", self._processor)

        def decode(batch: list[list[int]]) -> list[str]:
            return [str(t) for t in tokenizer.batch_decode(batch, skip_special_tokens=True)]

        vision_rows, confidence_rows = [], []
        for ids in completion_ids_list:
            ids = list(ids)
            text = decode([ids])[0] if ids else ""
            offsets: list[tuple[int, int]] | None = token_char_offsets(decode, ids)
            if (offsets[-1][1] if offsets else 0) != len(text):
                offsets = None  # cannot place tokens in the text: every token counts
            vision = span_masks(parse_response(text), offsets, len(ids), xp=torch_xp).vision
            confidence = torch.zeros(len(ids), dtype=torch.bool)
            block = confidence_block_span(text)
            tokens = None if block is None or offsets is None else char_span_to_token_span(block, offsets)
            if tokens is not None:
                confidence[tokens[0] :] = True
            vision_rows.append(torch.nn.functional.pad(vision, (0, width - len(ids)), value=False))
            confidence_rows.append(torch.nn.functional.pad(confidence, (0, width - len(ids)), value=False))
        device = self.accelerator.device
        return torch.stack(vision_rows).to(device), torch.stack(confidence_rows).to(device)

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
            vision=self._span_masks(completion_ids_list, width)[0] & response.to(device),
        )

    # -- 3. TAR on the advantages ---------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.calibration.pairs:
            inputs = self._with_pairs(inputs)
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)
        probe, self._probe = self._probe, None
        scored, self._scored = self._scored, None
        advantages = output["advantages"]
        width = output["completion_ids"].shape[1]
        mode = "train" if self._training else "eval"
        if scored is not None:
            advantages = self._answer_advantages(scored, mode)
        per_token = advantages.unsqueeze(1).expand(advantages.shape[0], width)
        if self.calibration.tar and probe is not None:
            logp, logq = _pad_to(probe.logp, width, 0.0), _pad_to(probe.logq, width, 0.0)
            response, vision = _pad_to(probe.response, width, False), _pad_to(probe.vision, width, False)
            weights = tar_weights(logp, logq, response, w_min=self.calibration.w_min, w_max=self.calibration.w_max)
            per_token = tar_advantages(advantages, weights.weights.to(advantages.dtype), vision)
            touched = vision & (advantages < 0).unsqueeze(1)
            if bool(touched.any()):
                self._metrics[mode]["tar/mean_weight"].append(float(weights.weights[touched].mean()))
            self._metrics[mode]["tar/reweighted_tokens"].append(float(touched.sum()))
        if scored is not None:
            confidence = self._confidence_advantages(scored, mode)
            mask = _pad_to(scored.confidence, width, False)
            per_token = split_advantages(advantages, confidence.to(advantages.dtype), mask, per_token)
            self._metrics[mode]["own_advantage/confidence_tokens"].append(float(mask.sum()))
        if scored is not None or (self.calibration.tar and probe is not None):
            output["advantages"] = per_token
        return output

    def _grouped_advantages(self, scored: _Scored, names: Sequence[str], mode: str) -> torch.Tensor:
        """The local rollouts' group advantages ``(B,)`` of the weighted sum of the reward terms ``names``."""
        terms = [getattr(f, "__name__", "") for f in self.reward_funcs]
        weights = self.reward_weights.to(scored.rewards.device)
        chosen = [terms.index(name) for name in names if name in terms]
        total = (scored.rewards[:, chosen] * weights[chosen]).nansum(dim=1)
        size = self._group_size(mode == "train")
        return group_advantages(total, size, scale=self.scale_rewards != "none")[scored.local]

    def _answer_advantages(self, scored: _Scored, mode: str) -> torch.Tensor:
        return self._grouped_advantages(scored, ANSWER_TERMS, mode)

    def _confidence_advantages(self, scored: _Scored, mode: str) -> torch.Tensor:
        terms = [getattr(f, "__name__", "") for f in self.reward_funcs]
        return self._grouped_advantages(scored, [t for t in terms if t not in ANSWER_TERMS], mode)

    def _with_pairs(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of ``inputs`` where the second half of each group sees the row's ``paired_images`` (its damaged
        copy) and every row of a paired group says which it saw (``pair_role``: 0 clean, 1 damaged)."""
        size = self._group_size(self._training)
        first = self.accelerator.process_index * len(inputs)
        out = []
        for i, example in enumerate(inputs):
            damaged = list(example.get("paired_images") or [])
            copy = dict(example)
            if damaged:
                role = 1.0 if (first + i) % size >= size // 2 else 0.0
                copy["pair_role"] = role
                if role:
                    copy["images"] = damaged
            else:
                copy["pair_role"] = math.nan
            out.append(copy)
        return out


CalibrationGRPOTrainer = ConfidenceGRPOTrainer
"""The former name of :class:`ConfidenceGRPOTrainer` ("calibration" also names the package that fits artifacts);
kept for one release."""
