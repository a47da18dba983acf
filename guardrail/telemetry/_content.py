"""Message content on spans: off unless the user opts in, and images never inline even then.

Prompts, answers and images may be personal or confidential, so the guard records none of them by default. A
user opts in with ``OtelTelemetry(capture_content=True)`` or the OpenTelemetry GenAI switch
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``true``, or the contrib enum values ``SPAN_ONLY`` /
``SPAN_AND_EVENT``). Opted in, messages go to ``gen_ai.input.messages`` / ``gen_ai.output.messages`` as JSON in
the conventions' message/parts shape; an image becomes a reference (its SHA-256 and size, or its URL), never its
bytes: a trace store is no place for megabytes of base64, and a hash is enough to find the image again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from ..errors import ImageError
from ..image_refs import is_data_url, read_image
from ..types import Generation, ImageBlock, Request, TextBlock

__all__ = ["CAPTURE_CONTENT_ENV", "capture_content_from_env", "image_reference", "input_messages", "output_messages"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_ON = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})


def capture_content_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` switches content capture on (default off)."""
    value = (os.environ if environ is None else environ).get(CAPTURE_CONTENT_ENV, "")
    return value.strip().lower() in _ON


def image_reference(block: ImageBlock) -> dict[str, Any]:
    """A content part that identifies an image without carrying it.

    Inline images (and ``data:`` URLs, base64 or percent-encoded: read by :mod:`guardrail.image_refs`) become
    ``{"type": "file", "modality": "image", "file_id": "sha256:...", "size": bytes, "mime_type": ...}``; other URLs
    become ``{"type": "uri", "modality": "image", "uri": ...}`` (never read: telemetry opens no file). Data that
    cannot be read (not valid base64, a malformed data URL) is identified by the hash of the text given.
    """
    url = block.url or ""
    if block.base64 is None and not is_data_url(url):
        return {"type": "uri", "modality": "image", "uri": url}
    try:
        found = read_image(block)  # inline data or a data URL: no file is opened
    except ImageError:
        given = block.base64 if block.base64 is not None else url.partition(",")[2]
        mime = block.mime_type if block.base64 is not None else url[5:].partition(",")[0].split(";", 1)[0]
        return _digest_part(given.encode("utf-8", "replace"), mime or None)
    return _digest_part(found.data, found.mime_type)


def _digest_part(data: bytes, mime_type: str | None) -> dict[str, Any]:
    part: dict[str, Any] = {
        "type": "file",
        "modality": "image",
        "file_id": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    if mime_type:
        part["mime_type"] = mime_type
    return part


def input_messages(request: Request) -> str:
    """``gen_ai.input.messages``: the request's messages as JSON, images as references."""
    messages = [
        {
            "role": message.role,
            "parts": [
                {"type": "text", "content": block.text} if isinstance(block, TextBlock) else image_reference(block)
                for block in message.content
            ],
        }
        for message in request.messages
    ]
    return json.dumps(messages, ensure_ascii=False)


def output_messages(generation: Generation) -> str:
    """``gen_ai.output.messages``: the model's answer text as one assistant message, with its finish reason when the
    backend reported one (``length``: cut off by the token limit)."""
    message: dict[str, Any] = {"role": "assistant", "parts": [{"type": "text", "content": generation.text}]}
    if generation.finish_reason is not None:
        message["finish_reason"] = generation.finish_reason
    return json.dumps([message], ensure_ascii=False)
