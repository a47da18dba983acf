"""What the black-box backends share: wire formats, error translation and the server-scoring protocol.

The LangChain backend and the OpenAI-compatible backend both reach a model they cannot look inside. This module
holds what they have in common, free of any optional dependency (no ``openai``, no ``langchain_openai``):

- ``image_url``: an :class:`~guardrail.ImageBlock` as the OpenAI ``image_url`` value (a ``data:`` URL);
- ``parse_logprobs``: OpenAI-style token records ``{"token", "logprob", "top_logprobs"}`` -> tokens and log-probs,
  refusing malformed records (a response we cannot read is a failed call, not a confident one);
- ``translate_error``: any library error of a model call -> :class:`~guardrail.BackendError` or
  :class:`~guardrail.BackendTimeout`, the original kept as ``__cause__``;
- ``TextScoringBackend`` / ``TextScores`` / ``ScoringUnavailable``: server-side teacher-forced scoring of an
  answer *text* under other images. The white-box ``ScoringBackend`` protocol re-scores token *ids*, which a
  remote server cannot accept without its tokenizer, so remote scoring works on the text instead.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from ..confidence.spans import parse_boxed
from ..errors import BackendError, BackendTimeout, GuardrailError
from ..types import ImageBlock, Message, Request, TextBlock
from .base import Backend

__all__ = [
    "ScoringUnavailable",
    "TextScores",
    "TextScoringBackend",
    "answer_of",
    "image_url",
    "is_control_flow",
    "openai_messages",
    "parse_logprobs",
    "replace_images",
    "translate_error",
]


class ScoringUnavailable(BackendError):
    """The server offers no teacher-forced scoring (no prompt log-probs): the visual KL cannot be measured."""


@dataclass(frozen=True)
class TextScores:
    """Teacher-forced log-probs of one answer text; row 0 is the original images, row ``1 + i`` variant i.

    ``tokens`` are the answer's tokens as the server split them (they concatenate to ``text``);
    ``token_logprobs[row][t]`` is the log-prob of token t under that row's images.
    """

    text: str
    tokens: tuple[str, ...]
    token_logprobs: tuple[tuple[float, ...], ...]


@runtime_checkable
class TextScoringBackend(Backend, Protocol):
    """A remote backend that may re-score an answer text teacher-forced under other images, server-side."""

    def score_text(self, request: Request, text: str, variants: Sequence[Sequence[Image.Image]] = ()) -> TextScores:
        """Scores of ``text`` under the request's images and each variant; ``ScoringUnavailable`` if unsupported."""
        ...


def answer_of(text: str) -> str | None:
    """The content of the last ``\\boxed{}`` in ``text``, stripped, or ``None``."""
    span = parse_boxed(text)
    return None if span is None else text[span[0] : span[1]].strip()


def image_url(block: ImageBlock) -> str:
    """The OpenAI ``image_url`` value of an image: a ``data:`` URL for inline images, else the block's url."""
    if block.base64 is not None:
        return f"data:{block.mime_type or 'image/png'};base64,{block.base64}"
    if block.url is None:
        raise BackendError("image block has neither inline data nor a url")
    return block.url


def openai_messages(request: Request) -> list[dict[str, Any]]:
    """The request as OpenAI chat messages (text parts and ``image_url`` parts, in order)."""
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        parts: list[dict[str, Any]] = []
        for block in message.content:
            if isinstance(block, TextBlock):
                parts.append({"type": "text", "text": block.text})
            else:
                parts.append({"type": "image_url", "image_url": {"url": image_url(block)}})
        if message.role != "user" and not message.images:
            messages.append({"role": message.role, "content": message.text})
        else:
            messages.append({"role": message.role, "content": parts})
    return messages


def replace_images(request: Request, images: Sequence[ImageBlock]) -> Request:
    """A copy of ``request`` whose images are replaced, in order, by ``images`` (same count)."""
    if len(images) != len(request.images):
        raise ValueError(f"`images` must replace the request's {len(request.images)} images, got {len(images)}")
    supply = iter(images)
    messages = [
        Message(
            role=m.role,
            content=tuple(next(supply) if isinstance(b, ImageBlock) else b for b in m.content),
        )
        for m in request.messages
    ]
    return request.model_copy(update={"messages": tuple(messages)})


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def parse_logprobs(records: Any) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Tokens and log-probs from OpenAI-style records (dicts or the client's objects), or from
    ``{"content": [...]}``. ``None`` gives ``((), ())``; a malformed record raises ``BackendError``."""
    if records is None:
        return (), ()
    content = _field(records, "content") if not isinstance(records, list | tuple) else records
    if content is None:
        return (), ()
    if not isinstance(content, list | tuple):
        raise BackendError(f"malformed response: logprobs content is a {type(content).__name__}, not a list")
    tokens: list[str] = []
    logprobs: list[float] = []
    for i, record in enumerate(content):
        token, logprob = _field(record, "token"), _field(record, "logprob")
        if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, int | float):
            raise BackendError(f"malformed response: logprobs record {i} lacks a string token and a numeric logprob")
        if math.isnan(logprob) or logprob > 1e-6:
            raise BackendError(f"malformed response: logprobs record {i} has logprob {logprob}, not a log-probability")
        tokens.append(token)
        logprobs.append(min(float(logprob), 0.0))
    return tuple(tokens), tuple(logprobs)


_TIMEOUT_NAMES = ("Timeout", "TimedOut")


def translate_error(exc: BaseException, what: str) -> BackendError:
    """A :class:`BackendError` (``BackendTimeout`` for timeouts) for a failed model call; chain it with ``from``.

    Recognised without importing any client library: timeouts by type (``TimeoutError``, ``asyncio.TimeoutError``
    or a class named ``*Timeout*``, e.g. ``openai.APITimeoutError``, ``httpx.ReadTimeout``); an HTTP status from a
    ``status_code`` attribute (``openai.APIStatusError`` and subclasses: 429 rate limit, 500 server error).
    """
    if isinstance(exc, GuardrailError) and isinstance(exc, BackendError):
        return exc
    kind = type(exc).__name__
    detail = str(exc) or repr(exc)
    inner, seen = exc.__cause__ or exc.__context__, 0
    while inner is not None and seen < 5:  # the root reason, e.g. httpx's under openai's "Connection error."
        if str(inner) and str(inner) not in detail:
            detail = f"{detail} <- {type(inner).__name__}: {inner}"
        inner, seen = inner.__cause__ or inner.__context__, seen + 1
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return BackendError(f"{what}: malformed response, not valid JSON ({kind}: {detail})")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or any(
        n in cls.__name__ for cls in type(exc).__mro__ for n in _TIMEOUT_NAMES
    ):
        return BackendTimeout(f"{what}: timed out ({kind}: {detail})")
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        hint = {429: "rate limited", 500: "server error", 503: "server unavailable"}.get(status, "HTTP error")
        return BackendError(f"{what}: HTTP {status} {hint} ({kind}: {detail})")
    return BackendError(f"{what}: {kind}: {detail}")


def is_control_flow(exc: BaseException) -> bool:
    """LangGraph's interrupts (``GraphBubbleUp``) must pass through a backend untouched."""
    return any(cls.__name__ == "GraphBubbleUp" for cls in type(exc).__mro__)
