"""The shared value types of a guarded call.

Data flows one way: a ``Request`` goes to a backend, which returns a ``Generation``; an estimator turns it into
``Signals``; a calibrator maps those to a ``Confidence``; the policy turns that into a ``Decision``; the loop
records each try as an ``Attempt`` and returns a ``GuardResult``. All are immutable pydantic models that
round-trip through JSON (``model_dump_json`` / ``model_validate_json``).

A confidence component that could not be measured is ``None``: it is never invented.
"""

from __future__ import annotations

import base64
import enum
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ImageError
from .image_refs import MAX_IMAGE_BYTES as MAX_IMAGE_BYTES  # re-exported: read here before image_refs existed
from .image_refs import decode_base64, mime_type_of, read_image
from .image_refs import open_image_file as open_image_file
from .image_refs import read_image_file as read_image_file

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "COMPONENTS",
    "Action",
    "Attempt",
    "Box",
    "Component",
    "Confidence",
    "ContentBlock",
    "Decision",
    "ErrorInfo",
    "ErrorStage",
    "Escalation",
    "FinishReason",
    "Generation",
    "GenerationOptions",
    "GuardResult",
    "ImageBlock",
    "Message",
    "Request",
    "Signals",
    "Status",
    "TextBlock",
    "TilePercept",
    "Usage",
    "finish_reason_of",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A number in [0, 1]; NaN and infinities are rejected."""

Component = Literal["visual", "reasoning", "overall", "familiarity", "stability"]
"""The confidence components: what the model saw, what it reasoned, both together, how familiar the input is
(how much the calibration behind the other three can be trusted for it), and how stable the percept is under views
of the image that must not change it."""

COMPONENTS: tuple[Component, ...] = ("visual", "reasoning", "overall", "familiarity", "stability")
"""Every component, in the order results, tables and traces show them."""


class Action(str, enum.Enum):
    """What the policy tells the loop to do next."""

    ACCEPT = "accept"
    ABSTAIN = "abstain"
    RE_ASK = "re_ask"
    FETCH_MORE_VIEWS = "fetch_more_views"
    ESCALATE = "escalate"
    FALLBACK = "fallback"

    @property
    def is_terminal(self) -> bool:
        """True for actions that end the guarded call (accept, abstain, escalate)."""
        return self in (Action.ACCEPT, Action.ABSTAIN, Action.ESCALATE)


# ---------------------------------------------------------------------------------------------------------------
# Requests: LangChain's standard content blocks, so that messages convert both ways without loss.


class TextBlock(_Frozen):
    """A piece of text in a message."""

    type: Literal["text"] = "text"
    text: str


class ImageBlock(_Frozen):
    """An image in a message: inline (``base64`` + ``mime_type``) or by ``url`` (http(s), data: or a file path)."""

    type: Literal["image"] = "image"
    base64: str | None = None
    mime_type: str | None = None
    url: str | None = None

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str = "image/png") -> ImageBlock:
        """An inline image from encoded bytes (PNG, JPEG, ...)."""
        return cls(base64=base64.b64encode(data).decode("ascii"), mime_type=mime_type)

    @classmethod
    def from_pil(cls, image: PILImage.Image) -> ImageBlock:
        """An inline PNG image from a PIL image."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return cls.from_bytes(buffer.getvalue(), "image/png")

    @classmethod
    def from_path(cls, path: str | Path) -> ImageBlock:
        """An inline image read from a file (bytes are kept as they are; decoding is checked when used).

        A missing, unreadable, empty or oversized file, or anything but a regular file (a directory, a device, a
        pipe), is an ``ImageError`` naming the path (see :func:`guardrail.image_refs.read_image_file`).
        """
        return cls.from_bytes(read_image_file(path), mime_type_of(path) or "image/png")

    @classmethod
    def from_reference(cls, reference: str | Path) -> ImageBlock:
        """An inline image from a local path, a ``file://`` URL or a ``data:`` URL (base64 or percent-encoded).

        Remote URLs (``http://``, ``https://``, ...) are refused with an ``ImageError``: guardrail never fetches
        images from the network; download the image and pass its bytes, a PIL image or a local path. The rules are
        those of :mod:`guardrail.image_refs`, where every image reference is read.
        """
        found = read_image(reference)
        return cls.from_bytes(found.data, found.mime_type or "image/png")

    def data(self) -> bytes:
        """The encoded image bytes of an inline image (an ``ImageError`` for a url-only block or bad base64)."""
        if self.base64 is None:
            raise ImageError("image block has no inline data (only a url); load it first")
        return decode_base64(self.base64)


ContentBlock = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class Message(_Frozen):
    """One chat message: a role and its content blocks."""

    role: Literal["system", "user", "assistant"]
    content: tuple[ContentBlock, ...]

    @property
    def text(self) -> str:
        """The message's text blocks joined by newlines."""
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def images(self) -> tuple[ImageBlock, ...]:
        """The message's image blocks, in order."""
        return tuple(b for b in self.content if isinstance(b, ImageBlock))


class Request(_Frozen):
    """What the agent asks the model: chat messages with images, and free-form metadata kept in traces."""

    messages: tuple[Message, ...] = Field(min_length=1)
    metadata: Mapping[str, str] = Field(default_factory=dict)

    @classmethod
    def from_question(
        cls,
        question: str,
        images: Sequence[ImageBlock | PILImage.Image | bytes | str | Path] = (),
        *,
        system: str | None = None,
    ) -> Request:
        """A one-turn request: the images first, then the question, as most vision-language chat templates expect.

        An empty or whitespace-only question is an :class:`~guardrail.InputError`: there is nothing to answer.
        """
        if not question.strip():
            from .errors import InputError

            raise InputError("the question is empty: there is nothing to answer")
        blocks: list[TextBlock | ImageBlock] = [_to_image_block(im) for im in images]
        blocks.append(TextBlock(text=question))
        messages = [Message(role="user", content=tuple(blocks))]
        if system is not None:
            messages.insert(0, Message(role="system", content=(TextBlock(text=system),)))
        return cls(messages=tuple(messages))

    @property
    def question(self) -> str:
        """The text of the last user message."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""

    @property
    def images(self) -> tuple[ImageBlock, ...]:
        """Every image in the conversation, in order."""
        return tuple(im for m in self.messages for im in m.images)

    def with_images(self, extra: Sequence[ImageBlock]) -> Request:
        """A copy whose last user message also carries ``extra`` images (placed after its existing images)."""
        return self._edit_last_user(lambda blocks: _insert_images(blocks, extra))

    def swapping_images(self, images: Sequence[ImageBlock]) -> Request:
        """A copy in which each image, wherever it is, is swapped for its counterpart in ``images`` (same count, same
        order): the same prompt shown other pixels, as the black-box visual probe needs."""
        if len(images) != len(self.images):
            raise ValueError(f"`images` must replace the request's {len(self.images)} images, got {len(images)}")
        supply = iter(images)
        messages = tuple(
            m.model_copy(update={"content": tuple(next(supply) if isinstance(b, ImageBlock) else b for b in m.content)})
            for m in self.messages
        )
        return self.model_copy(update={"messages": messages})

    def replacing_images(self, views: Sequence[ImageBlock]) -> Request:
        """A copy in which ``views`` take the place of the images of the last user message that has any, at its
        first image's position (its text blocks stay, in order); without such a message they join the last user
        message as :meth:`with_images` would."""
        messages = list(self.messages)
        for i in range(len(messages) - 1, -1, -1):
            message = messages[i]
            if message.role != "user" or not message.images:
                continue
            first = next(j for j, block in enumerate(message.content) if isinstance(block, ImageBlock))
            rest = tuple(block for block in message.content[first:] if not isinstance(block, ImageBlock))
            messages[i] = message.model_copy(update={"content": (*message.content[:first], *views, *rest)})
            return self.model_copy(update={"messages": tuple(messages)})
        return self.with_images(views)

    def with_text(self, suffix: str) -> Request:
        """A copy whose last user message ends with ``suffix`` as an extra text block."""
        return self._edit_last_user(lambda blocks: (*blocks, TextBlock(text=suffix)))

    def _edit_last_user(self, edit: Any) -> Request:
        messages = list(self.messages)
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].role == "user":
                messages[i] = Message(role="user", content=tuple(edit(messages[i].content)))
                return self.model_copy(update={"messages": tuple(messages)})
        messages.append(Message(role="user", content=tuple(edit(()))))
        return self.model_copy(update={"messages": tuple(messages)})


def _insert_images(
    blocks: tuple[TextBlock | ImageBlock, ...], extra: Sequence[ImageBlock]
) -> tuple[TextBlock | ImageBlock, ...]:
    last_image = max((i for i, b in enumerate(blocks) if isinstance(b, ImageBlock)), default=-1)
    return (*blocks[: last_image + 1], *extra, *blocks[last_image + 1 :])


def _to_image_block(image: ImageBlock | PILImage.Image | bytes | str | Path) -> ImageBlock:
    if isinstance(image, ImageBlock):
        return image
    if isinstance(image, bytes):
        return ImageBlock.from_bytes(image)
    if isinstance(image, str | Path):
        return ImageBlock.from_reference(image)
    return ImageBlock.from_pil(image)


# ---------------------------------------------------------------------------------------------------------------
# Model output


class GenerationOptions(_Frozen):
    """How to generate: which attempt this is, how to vary it on a re-ask, and the caller's limits.

    ``None`` (and an empty ``stop``) leave the backend's own default. A backend honours every field it is given;
    ``stop`` ends generation at the first of these strings (backends that cannot stop there themselves still
    end the text at it).
    """

    attempt: int = Field(default=0, ge=0)
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0.0)
    max_new_tokens: int | None = Field(default=None, ge=1)
    stop: tuple[str, ...] = ()
    assistant_prefix: str | None = None
    """Text the answer starts with (e.g. ``<think><vision>I see a red circle.</vision>``): the prompt is followed by
    it as the start of the assistant's turn and generation continues from it. The ``Generation`` covers the whole
    answer, the prefix included (its tokens teacher-forced, with their log-probs), so the estimator measures the
    prefilled spans as it measures generated ones. A backend that cannot continue from a prefix raises
    ``BackendError`` rather than answer afresh; ``None``: answer from the start."""

    @field_validator("assistant_prefix")
    @classmethod
    def _prefix_is_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("assistant_prefix must be a non-empty string or None, got ''")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_strings_are_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in value):
            raise ValueError(f"stop sequences must be non-empty strings, got {list(value)!r}")
        return value


class Usage(_Frozen):
    """Token counts of one model call."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)


FinishReason = Literal["stop", "length", "content_filter", "tool_call", "error"]
"""Why a model stopped generating, in the OpenTelemetry GenAI vocabulary: ``stop`` (it ended its answer, or met a
stop sequence), ``length`` (cut off by the token limit), ``content_filter``, ``tool_call``, ``error``."""

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "refusal": "content_filter",
    "tool_calls": "tool_call",
    "tool_call": "tool_call",
    "tool_use": "tool_call",
    "function_call": "tool_call",
    "error": "error",
}


def finish_reason_of(raw: object) -> FinishReason | None:
    """A provider's finish reason (OpenAI ``length``, Anthropic ``max_tokens``, Gemini ``MAX_TOKENS``, ...) in the
    :data:`FinishReason` vocabulary; ``None`` when it is missing or not one we know (never guessed)."""
    if not isinstance(raw, str):
        return None
    return _FINISH_REASONS.get(raw.strip().lower())


class Generation(_Frozen):
    """One model answer: its text, the final answer parsed from it, token ids and per-token log-probs.

    ``finish_reason`` says why generation ended (``length``: the token limit cut it off), ``None`` when the
    backend cannot tell; ``options`` are the settings it actually generated with (its own defaults filled in:
    the token limit, the temperature, 0 when greedy, the seed), ``None`` when the backend does not report them.
    """

    text: str
    answer: str | None = None
    """The final answer (e.g. the content of ``\\boxed{}``); ``None`` when none could be parsed."""
    model: str = ""
    provider: str = ""
    token_ids: tuple[int, ...] = ()
    token_logprobs: tuple[float, ...] = ()
    tokens: tuple[str, ...] = ()
    """The generated tokens as text, one per log-prob, where the backend knows them (remote APIs return them)."""
    usage: Usage = Usage()
    seconds: float = Field(default=0.0, ge=0.0)
    finish_reason: FinishReason | None = None
    options: GenerationOptions | None = None

    @field_validator("token_logprobs")
    @classmethod
    def _logprobs_are_log_probabilities(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for i, lp in enumerate(value):
            if math.isnan(lp) or lp > 1e-6:
                raise ValueError(f"token_logprobs[{i}] must be a log-probability (<= 0), got {lp}")
        return value

    @model_validator(mode="after")
    def _one_token_per_logprob(self) -> Generation:
        if self.tokens and self.token_logprobs and len(self.tokens) != len(self.token_logprobs):
            raise ValueError(
                f"tokens and token_logprobs must have one entry per token, got {len(self.tokens)} "
                f"and {len(self.token_logprobs)}"
            )
        return self

    @property
    def final_answer(self) -> str:
        """The answer a guard returns: the parsed ``answer``, or the whole text when the model wrote none."""
        return self.answer if self.answer is not None else self.text.strip()


class Signals(_Frozen):
    """Raw confidence evidence for one generation, before calibration.

    ``visual``, ``reasoning`` and ``holistic`` are raw scores in [0, 1] (higher = surer) or ``None`` when not
    measured; ``features`` holds every named measurement behind them; ``sources`` says which features
    produced each score; ``problems`` lists what could not be parsed or measured.
    """

    visual: Probability | None = None
    reasoning: Probability | None = None
    holistic: Probability | None = None
    familiarity: Probability | None = None
    """How familiar the input is to the calibration data (a conformal p-value; see ``Confidence``)."""
    features: Mapping[str, float] = Field(default_factory=dict)
    sources: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    problems: tuple[str, ...] = ()
    embeddings: Mapping[str, tuple[float, ...]] = Field(default_factory=dict, exclude=True, repr=False)
    """The input's pooled feature vectors by side (``text``, ``image``): what calibration fits the familiarity
    reference on. Kept in memory only (never serialised: a large model's vectors have thousands of numbers)."""


class Confidence(_Frozen):
    """Calibrated confidence: P(perception correct), P(reasoning correct | perception), P(answer correct), and
    the input's familiarity.

    ``familiarity`` is a conformal p-value: the chance that an input like the calibration data looks at least as
    unusual as this one (question and images, judged by the model's own input features). On inputs like the
    calibration data it is uniform, so a rule ``familiarity below t`` fires on at most a fraction t of them; a
    value near 0 says the calibration behind the other components does not cover this input.

    Each is in [0, 1], or ``None`` when it could not be measured (never invented).
    """

    visual: Probability | None = None
    reasoning: Probability | None = None
    overall: Probability | None = None
    familiarity: Probability | None = None
    stability: Probability | None = None
    """The share of the percept's token probability that survives the stability probe's views (geometric mean; 1 =
    unmoved), as measured (``confidence.stability``): not a calibrated probability; unknown without the probe."""
    sources: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    calibrated: bool = True
    """Whether a fitted calibrator produced these numbers. ``False``: they are the estimator's raw scores passed
    through (a guard without a calibration artifact), not probabilities; the policy then does not accept unless it
    opted in (``accept_uncalibrated``)."""

    def get(self, component: Component) -> float | None:
        """The value of one component, or ``None`` when unknown."""
        value: float | None = getattr(self, component)
        return value


# ---------------------------------------------------------------------------------------------------------------
# Decisions and results


class Decision(_Frozen):
    """What the policy decided after one attempt, and why."""

    action: Action
    rule: str
    """Which part of the policy fired: ``rules[2]`` (or ``rules[2] name``), ``otherwise``, ``on_error``,
    ``on_exhausted``, ``on_uncalibrated``."""
    reason: str
    params: Mapping[str, Any] = Field(default_factory=dict)
    attempt: int = Field(ge=0)
    components: tuple[Component, ...] = ()
    """The confidence components the deciding rule tested, in ``COMPONENTS`` order (for ``on_exhausted`` after a
    remedy asked for on the last attempt, those of the rule that asked); empty for ``otherwise``, ``on_error`` and
    a spent time budget. What a reviewer is told caused an escalation."""


ErrorStage = Literal["backend", "estimator", "calibrator", "view_provider", "policy", "budget", "input"]


class ErrorInfo(_Frozen):
    """An error kept in a result: where it happened, its type, and its message."""

    stage: ErrorStage
    type: str
    message: str

    @classmethod
    def from_exception(cls, stage: ErrorStage, exc: BaseException) -> ErrorInfo:
        """Record ``exc`` as raised at ``stage``."""
        return cls(stage=stage, type=type(exc).__name__, message=str(exc) or repr(exc))


Box = tuple[int, int, int, int]
"""A crop box in pixels of the source image: (left, top, right, bottom)."""


class TilePercept(_Frozen):
    """What the model saw in one tile of the source image, shown to it alone (``fetch_more_views`` mode ``tile``)."""

    box: Box
    percept: str
    """The body of the tile answer's ``<vision>`` block."""


class Attempt(_Frozen):
    """One model call inside a guarded call, with everything measured about it.

    A remedy may shape the call: ``percept`` is the percept its answer was prefilled with (the merged percept of
    ``tile_percepts`` after ``fetch_more_views`` mode ``tile``, or the previous attempt's own after ``re_ask`` with
    ``keep_percept``); ``sampled_answers`` are the final answers of a self-consistency re-ask's samples, the
    majority of which is ``generation``.
    """

    index: int = Field(ge=0)
    model: str = ""
    request: Request | None = None
    generation: Generation | None = None
    signals: Signals | None = None
    confidence: Confidence | None = None
    decision: Decision
    error: ErrorInfo | None = None
    seconds: float = Field(default=0.0, ge=0.0)
    tile_percepts: tuple[TilePercept, ...] = ()
    percept: str | None = None
    sampled_answers: tuple[str | None, ...] = ()


Status = Literal["accepted", "abstained", "escalated"]


class Escalation(_Frozen):
    """What a human reviewer is shown: the question, the best candidate answer and its confidences, and the
    confidences the escalating decision acted on."""

    question: str
    candidate_answer: str | None
    confidence: Confidence | None
    """The candidate's confidences: those of the attempt with the highest overall confidence."""
    reason: str
    decision_confidence: Confidence | None = None
    """The confidences the decision that escalated acted on: the latest attempt's, which the deciding rule tested
    (they differ from ``confidence`` when the candidate came from an earlier attempt). ``None`` when no attempt was
    measured."""


class GuardResult(_Frozen):
    """The outcome of a guarded call.

    ``answer`` is set only when the status is ``accepted``: an answer that failed the policy is never returned as
    the answer (an escalation carries it as ``escalation.candidate_answer`` for the reviewer).
    """

    status: Status
    answer: str | None
    confidence: Confidence | None
    decisions: tuple[Decision, ...]
    attempts: tuple[Attempt, ...]
    error: ErrorInfo | None = None
    escalation: Escalation | None = None
    policy: str = ""
    seconds: float = Field(default=0.0, ge=0.0)

    @property
    def accepted(self) -> bool:
        """True when the answer passed the policy."""
        return self.status == "accepted"

    @property
    def calibrated(self) -> bool | None:
        """Whether the final confidence was calibrated (``False``: raw scores); ``None`` when none was measured."""
        return None if self.confidence is None else self.confidence.calibrated

    @property
    def final_decision(self) -> Decision:
        """The decision that ended the call."""
        return self.decisions[-1]

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why the model stopped generating the accepted answer (``length``: cut off by the token limit);
        ``None`` when no answer was accepted or the backend could not tell."""
        if self.status != "accepted" or not self.attempts or self.attempts[-1].generation is None:
            return None
        return self.attempts[-1].generation.finish_reason
