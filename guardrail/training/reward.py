"""The GRPO reward of METHOD.md section 8, one rollout at a time, and its terms as TRL reward functions.

For a rollout with correctness ``I`` (1 when its ``\\boxed{}`` answer matches, by ``responses.answers_match``),
verbalized scores ``v``, ``r`` in [0, 1] (the integers 0..10 divided by 10), ``c_hm = 2vr/(v+r)`` (0 when either
is 0) and the visual certainty target ``s`` (``target.visual_certainty_targets``)::

    R = I + 2.0 * (-(c_hm - I)^2) + 0.4 * format + 0.4 * (-(v - s)^2)

A response whose confidences cannot be parsed (either score missing, malformed or out of range) gets -1 in place
of each Brier term; so does the visual term when the target could not be measured (no token in the perception
span). ``format`` is 1 when the response has all the parts of METHOD.md section 2 that the project reads (a
``<vision>`` span, a ``<reasoning>`` span, a ``\\boxed{}`` answer and both scores), else 0.

``single`` mode is the one-score baseline (RLCR): the model's one confidence is its ``<reasoning_confidence>``,
rewarded by Brier against correctness, with no visual term; format then asks for that score only.

The terms are also offered as separate TRL reward functions (``reward_functions``) whose weighted sum
(``RewardWeights.as_list``, passed as ``GRPOConfig.reward_weights``) is the same ``R``, so that TRL logs each term.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..responses import answers_match, parse_response

__all__ = [
    "GROUP_TERMS",
    "RewardMode",
    "RewardTerms",
    "RewardWeights",
    "harmonic_confidence",
    "reward_functions",
    "reward_terms",
]

RewardMode = Literal["decoupled", "single"]
UNPARSED_BRIER = -1.0
"""What a Brier term is worth when its confidence (or the visual target) is missing."""


@dataclass(frozen=True)
class RewardWeights:
    """The weights of the reward's terms (METHOD.md section 8: 1.0, 2.0, 0.4, 0.4)."""

    correctness: float = 1.0
    calibration: float = 2.0
    format: float = 0.4
    visual: float = 0.4
    ranking: float = 1.0
    pair: float = 0.4

    def as_list(self, mode: RewardMode = "decoupled", *, ranking: bool = False, pairs: bool = False) -> list[float]:
        """Weights in the order of :func:`reward_functions` (the visual term only in ``decoupled`` mode; the
        ranking and pair terms when switched on)."""
        weights = [self.correctness, self.calibration, self.format]
        if mode == "decoupled":
            weights.append(self.visual)
        return weights + [self.ranking] * ranking + [self.pair] * pairs


def harmonic_confidence(v: float, r: float) -> float:
    """``2vr / (v + r)``, 0 when either is 0 (one weak part sinks the whole)."""
    return 0.0 if v <= 0.0 or r <= 0.0 else 2.0 * v * r / (v + r)


@dataclass(frozen=True)
class RewardTerms:
    """The unweighted terms of one rollout's reward and what they were computed from."""

    correctness: float
    calibration: float
    format: float
    visual: float
    vision_confidence: float | None
    reasoning_confidence: float | None

    def total(self, weights: RewardWeights = RewardWeights(), mode: RewardMode = "decoupled") -> float:
        """The weighted sum ``R``."""
        terms = [self.correctness, self.calibration, self.format, self.visual]
        return sum(w * t for w, t in zip(weights.as_list(mode), terms, strict=False))


def reward_terms(
    text: str, answer: str, visual_target: float | None = None, *, mode: RewardMode = "decoupled"
) -> RewardTerms:
    """The terms of the reward of one response ``text`` to a question whose right answer is ``answer``.

    ``visual_target`` is the rollout's visual certainty target in [0, 1] (``None`` or NaN: not measured).
    """
    parsed = parse_response(text)
    correct = 1.0 if answers_match(parsed.answer_text, answer) else 0.0
    v, r = parsed.vision_confidence, parsed.reasoning_confidence
    if mode == "single":
        calibration = UNPARSED_BRIER if r is None else -((r - correct) ** 2)
        fmt = 1.0 if r is not None and parsed.answer is not None else 0.0
        return RewardTerms(correct, calibration, fmt, 0.0, None, r)
    calibration = UNPARSED_BRIER if v is None or r is None else -((harmonic_confidence(v, r) - correct) ** 2)
    measured = visual_target is not None and math.isfinite(visual_target)
    visual = -((v - visual_target) ** 2) if v is not None and measured else UNPARSED_BRIER  # type: ignore[operator]
    complete = parsed.has_vision_tag and parsed.has_reasoning_tag and parsed.answer is not None
    fmt = 1.0 if complete and v is not None and r is not None else 0.0
    return RewardTerms(correct, calibration, fmt, visual, v, r)


def _text(completion: Any) -> str:
    """A TRL completion as text: a string, or a conversational list of messages (their text joined)."""
    if isinstance(completion, str):
        return completion
    parts: list[str] = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(str(block.get("text", "")) for block in content if block.get("type") == "text")
    return "".join(parts)


RewardFunction = Callable[..., list[float]]


GROUP_TERMS = ("ranking", "pair")
"""The reward functions whose values depend on a rollout's whole group (``ranking.ranking_rewards``,
``ranking.pair_rewards``): they return 0 here, and ``ConfidenceGRPOTrainer`` writes their values once the rollouts
of every process are gathered (a group may span processes)."""


def reward_functions(
    mode: RewardMode = "decoupled", *, ranking: bool = False, pairs: bool = False
) -> list[RewardFunction]:
    """TRL reward functions, one per term, in the order of :meth:`RewardWeights.as_list`.

    Each takes TRL's keyword arguments: ``completions`` and the data set's ``answer`` column; the visual term
    also reads ``visual_certainty``, the column ``CalibrationGRPOTrainer`` adds before rewards are computed.
    ``ranking`` and ``pairs`` add the group terms (:data:`GROUP_TERMS`), whose values only a
    ``ConfidenceGRPOTrainer`` computes.
    """

    def terms(completions: Sequence[Any], answer: Sequence[str], targets: Sequence[float | None]) -> list[RewardTerms]:
        return [reward_terms(_text(c), a, t, mode=mode) for c, a, t in zip(completions, answer, targets, strict=True)]

    def correctness(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float]:
        return [t.correctness for t in terms(completions, answer, [None] * len(answer))]

    def calibration(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float]:
        return [t.calibration for t in terms(completions, answer, [None] * len(answer))]

    def format_(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float]:
        return [t.format for t in terms(completions, answer, [None] * len(answer))]

    def visual(
        completions: Sequence[Any], answer: Sequence[str], visual_certainty: Sequence[float | None], **_: Any
    ) -> list[float]:
        return [t.visual for t in terms(completions, answer, visual_certainty)]

    correctness.__name__ = "correctness"
    calibration.__name__ = "calibration_brier"
    format_.__name__ = "format"
    visual.__name__ = "visual_brier"
    functions: list[RewardFunction] = [correctness, calibration, format_]
    if mode == "decoupled":
        functions.append(visual)
    for name, on in zip(GROUP_TERMS, (ranking, pairs), strict=True):
        if on:
            functions.append(_group_placeholder(name))
    return functions


def _group_placeholder(name: str) -> RewardFunction:
    def group_term(completions: Sequence[Any], **_: Any) -> list[float]:
        return [0.0] * len(completions)

    group_term.__name__ = name
    return group_term
