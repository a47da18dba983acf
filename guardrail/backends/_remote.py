"""What the black-box backends share: wire formats, error translation and the server-scoring protocol.

The LangChain backend and the OpenAI-compatible backend both reach a model they cannot look inside. This module
holds what they have in common, free of any optional dependency (no ``openai``, no ``langchain_openai``):

- ``image_url``: an :class:`~guardrail.ImageBlock` as the OpenAI ``image_url`` value (a ``data:`` URL);
- ``parse_logprobs``: OpenAI-style token records ``{"token", "logprob", "top_logprobs"}`` -> tokens and log-probs,
  refusing malformed records (a response we cannot read is a failed call, not a confident one);
- ``translate_error``: any library error of a model call -> :class:`~guardrail.BackendError` or
  :class:`~guardrail.BackendTimeout`, the original kept as ``__cause__``;

The server-scoring contract these backends may offer (``TextScoringBackend``) lives with the other contracts in
``backends/base.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import BackendError, BackendTimeout, GuardrailError
from ..image_refs import data_url
from ..types import ImageBlock, Request, TextBlock

__all__ = [
    "image_url",
    "openai_messages",
    "parse_logprobs",
    "translate_error",
]


def image_url(block: ImageBlock) -> str:
    """The OpenAI ``image_url`` value of an image: a ``data:`` URL for inline images, else the block's url."""
    if block.base64 is not None:
        return data_url(block.base64, block.mime_type)
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


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def parse_logprobs(records: Any, *, text: str | None = None) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Tokens and log-probs from OpenAI-style records (dicts or the client's objects), or from
    ``{"content": [...]}``. ``None`` gives ``((), ())``; a malformed record raises ``BackendError``.

    With the response ``text``, trailing records that the text does not contain are dropped: some servers (vLLM)
    return the stop token (``</s>``) as the last record but strip it from the text, and the tokens must spell the
    text for the answer's spans to be found."""
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
    if text is not None:
        keep = _spelling(tokens, text)
        tokens, logprobs = tokens[:keep], logprobs[:keep]
    return tuple(tokens), tuple(logprobs)


def _spelling(tokens: list[str], text: str) -> int:
    """How many leading tokens to keep: all of them, unless a prefix of them spells ``text`` exactly and the rest
    (a stop token the server left out of the text) adds characters the text does not have."""
    joined = "".join(tokens)
    if joined == text or not joined.startswith(text):
        return len(tokens)
    length = 0
    for count, token in enumerate(tokens):
        if length == len(text):
            return count
        length += len(token)
    return len(tokens)


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
