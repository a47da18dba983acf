"""The structured response (METHOD.md section 2): its parts, its final answer, and the one rule for comparing answers.

Everything that reads a model's response goes through this module: backends take the final answer from it
(``final_answer``), estimators map its spans to generated tokens, calibration and the benchmarks grade answers and
perception with it (``answers_match``, ``grade_perception``), and the agreement estimator compares re-asked answers
with the same rule. It imports nothing from the package, so every layer may use it.

A trained model writes ``<vision>...</vision><reasoning>...</reasoning>``, a final ``\\boxed{...}`` and
``<vision_confidence>v</vision_confidence><reasoning_confidence>r</reasoning_confidence>`` with integer v, r in
0..10. Whitespace around ``<``, ``>`` and ``/`` is tolerated, and tag names are matched case-insensitively.

Anything missing degrades explicitly, never by invention: without a ``<vision>`` (or ``<reasoning>``) span the
whole response serves as that span; without a valid score the score is ``None``. A malformed or out-of-range
score is recorded in ``problems`` (never clipped into range).

Token spans come from *prefix decoding*: token ``k`` covers the characters between ``len(decode(ids[:k]))`` and
``len(decode(ids[:k+1]))``. Unlike re-encoding the text, this is exact for the token ids that were generated,
whatever the tokenizer (byte-level BPE, SentencePiece with its leading spaces, special tokens that decode to
nothing).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CharSpan",
    "ParsedResponse",
    "TokenSpan",
    "answers_match",
    "char_offsets_from_prefixes",
    "char_span_to_token_span",
    "final_answer",
    "grade_perception",
    "majority_answer",
    "normalize_answer",
    "parse_boxed",
    "parse_response",
    "percept_head",
    "token_char_offsets",
]

CharSpan = tuple[int, int]
"""Half-open character range ``[start, end)`` in the response text."""
TokenSpan = tuple[int, int]
"""Half-open token-index range ``[start, end)`` in the generated token ids."""

SCORE_MAX = 10


def _tag(name: str, *, closing: bool = False) -> str:
    slash = r"/\s*" if closing else ""
    return rf"<\s*{slash}{name}\s*>"


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"{_tag(name)}(?P<body>.*?){_tag(name, closing=True)}", re.IGNORECASE | re.DOTALL)


_VISION = _block("vision")
_REASONING = _block("reasoning")
_SCORES = {"vision": _block("vision_confidence"), "reasoning": _block("reasoning_confidence")}
_OPEN = {"vision": re.compile(_tag("vision"), re.IGNORECASE), "reasoning": re.compile(_tag("reasoning"), re.I)}
_BOXED = re.compile(r"\\boxed\s*\{")
_INTEGER = re.compile(r"[+-]?\d+")
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ParsedResponse:
    """The parts of one response, as character spans of ``text``.

    ``vision`` and ``reasoning`` are the bodies of their tags, or the whole text when the tag is absent;
    ``answer`` is the content of the last ``\\boxed{}`` (``None`` when there is none); the verbalized scores are
    in [0, 1] (v/10) or ``None``.
    """

    text: str
    vision: CharSpan
    reasoning: CharSpan
    answer: CharSpan | None
    vision_confidence: float | None
    reasoning_confidence: float | None
    has_vision_tag: bool
    has_reasoning_tag: bool
    problems: tuple[str, ...] = field(default=())

    @property
    def answer_text(self) -> str | None:
        """The final answer, stripped of surrounding whitespace, or ``None``."""
        return None if self.answer is None else self.text[self.answer[0] : self.answer[1]].strip()

    @property
    def perception_text(self) -> str:
        """What the model says it saw (the whole response when it has no ``<vision>`` tag)."""
        return self.text[self.vision[0] : self.vision[1]].strip()


def _body_span(pattern: re.Pattern[str], name: str, text: str, problems: list[str]) -> CharSpan | None:
    match = pattern.search(text)
    if match is not None:
        return match.span("body")
    if _OPEN[name].search(text) is not None:
        problems.append(f"<{name}> is never closed; the whole response serves as the {name} span")
    return None


def _score(name: str, text: str, problems: list[str]) -> float | None:
    match = _SCORES[name].search(text)
    if match is None:
        return None
    raw = match.group("body").strip()
    if _INTEGER.fullmatch(raw) is None:
        problems.append(f"{name}_confidence {raw!r} is not an integer 0..{SCORE_MAX}; treated as absent")
        return None
    value = int(raw)
    if not 0 <= value <= SCORE_MAX:
        problems.append(f"{name}_confidence {value} is out of range 0..{SCORE_MAX}; treated as absent")
        return None
    return value / SCORE_MAX


def parse_boxed(text: str) -> CharSpan | None:
    """Character span of the content of the last ``\\boxed{...}`` (braces balanced), or ``None``.

    >>> text = r"so \\boxed{\\frac{1}{2}}."
    >>> start, end = parse_boxed(text)
    >>> text[start:end]
    '\\\\frac{1}{2}'
    """
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return (start, i)
    return None


def final_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{}`` in ``text``, stripped, or ``None`` when the model wrote none."""
    span = parse_boxed(text)
    return None if span is None else text[span[0] : span[1]].strip()


def normalize_answer(answer: str) -> str:
    """An answer as answers are compared: case-folded, whitespace collapsed, trailing full stops dropped.

    >>> normalize_answer("  The  Circle. ")
    'the circle'
    """
    return " ".join(answer.casefold().split()).rstrip(".").strip()


def answers_match(answer: str | None, expected: str) -> bool:
    """Whether two answers say the same under :func:`normalize_answer` (no answer matches nothing).

    The one rule used to grade calibration data and benchmarks and to count agreement between re-asks.
    """
    return answer is not None and normalize_answer(answer) == normalize_answer(expected)


def majority_answer(answers: Sequence[str | None]) -> int:
    """The index of the answer most of ``answers`` give (self-consistency): the first of the largest group of
    answers that match under :func:`normalize_answer`; a tie goes to the group answered first. ``None`` (no answer)
    joins no group, so it wins only when no sample answered (then index 0).

    >>> majority_answer(["2", None, "3", "3.", "2"])
    0
    >>> majority_answer(["2", "3", "3"])
    1
    """
    if not answers:
        raise ValueError("`answers` must hold at least one answer, got none")
    groups: dict[str, list[int]] = {}
    for index, answer in enumerate(answers):
        if answer is not None:
            groups.setdefault(normalize_answer(answer), []).append(index)
    if not groups:
        return 0
    return max(groups.values(), key=lambda members: (len(members), -members[0]))[0]


def grade_perception(text: str, expected: Sequence[str] | None, vocabulary: Sequence[str] | None = None) -> bool | None:
    """Whether ``text`` names what the image shows; ``None`` when the item does not say.

    With a ``vocabulary`` (all words of the kind, e.g. every colour and shape), the words of that vocabulary the
    text names must be exactly the expected ones: naming a second colour is a perception error. Without one,
    every expected word must appear.
    """
    if expected is None:
        return None
    words = set(_WORD.findall(text.casefold()))
    wanted = {w.casefold() for w in expected}
    if vocabulary is None:
        return wanted <= words
    return words & {w.casefold() for w in vocabulary} == wanted


def parse_response(text: str) -> ParsedResponse:
    """Parse one response; never raises on malformed content (problems are recorded instead)."""
    problems: list[str] = []
    whole = (0, len(text))
    vision = _body_span(_VISION, "vision", text, problems)
    reasoning = _body_span(_REASONING, "reasoning", text, problems)
    return ParsedResponse(
        text=text,
        vision=vision or whole,
        reasoning=reasoning or whole,
        answer=parse_boxed(text),
        vision_confidence=_score("vision", text, problems),
        reasoning_confidence=_score("reasoning", text, problems),
        has_vision_tag=vision is not None,
        has_reasoning_tag=reasoning is not None,
        problems=tuple(problems),
    )


def percept_head(text: str, percept: str | None = None) -> str | None:
    """The start of a response up to the end of its ``<vision>`` block, with the block's body replaced by
    ``percept`` when given: what a model is prefilled with to reason on that percept in its own format.

    ``None`` when ``text`` has no closed ``<vision>`` block (there is no percept to keep or replace).

    >>> percept_head("<think><vision>I see a red circle.</vision><reasoning>It is red.</reasoning>", "I see a square.")
    '<think><vision>I see a square.</vision>'
    """
    match = _VISION.search(text)
    if match is None:
        return None
    start, end = match.span("body")
    body = text[start:end] if percept is None else percept
    return text[:start] + body + text[end : match.end()]


def char_offsets_from_prefixes(prefix_lengths: Sequence[int]) -> list[CharSpan]:
    """Token character ranges from the decoded lengths of the prefixes ``ids[:1], ids[:2], ...``.

    A prefix can decode shorter than an earlier one (a partial UTF-8 sequence decodes to a replacement character
    that the next byte completes); a running maximum keeps the ranges ordered, so such a token covers the
    character it helps to complete.
    """
    spans: list[CharSpan] = []
    previous = 0
    for length in prefix_lengths:
        end = max(previous, length)
        spans.append((previous, end))
        previous = end
    return spans


def token_char_offsets(
    decode_batch: Callable[[list[list[int]]], list[str]], token_ids: Sequence[int]
) -> list[CharSpan]:
    """Character range of each generated token in ``decode(token_ids)``, by prefix decoding.

    ``decode_batch`` decodes a batch of id lists exactly as the response text was decoded (same special-token
    handling). One batched call of ``len(token_ids)`` prefixes: cheap for responses of a few hundred tokens.
    """
    ids = list(token_ids)
    prefixes = [ids[: k + 1] for k in range(len(ids))]
    texts = decode_batch(prefixes) if prefixes else []
    return char_offsets_from_prefixes([len(t) for t in texts])


def char_span_to_token_span(span: CharSpan, offsets: Sequence[CharSpan]) -> TokenSpan | None:
    """The token range whose characters overlap ``span``; ``None`` when no token does.

    ``offsets`` must be ordered, as ``token_char_offsets`` returns them.

    A token overlaps ``[a, b)`` when it covers at least one of its characters; a zero-width token (a special
    token that decodes to nothing) counts only strictly inside the span, never at its edges.
    """
    start, end = span
    # Offsets are ordered (both ends non-decreasing), so the overlapping tokens are one contiguous run: from the
    # first token ending after ``start`` to the last one starting before ``end``.
    first = bisect.bisect_right([hi for _, hi in offsets], start)
    stop = bisect.bisect_left([lo for lo, _ in offsets], end)
    return (first, stop) if first < stop else None
