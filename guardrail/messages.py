"""LangChain messages <-> guardrail ``Request``, both ways, over LangChain's standard content blocks.

Agents hold conversations as LangChain messages; the guard takes a :class:`~guardrail.Request`. This module is
the one seam between them, so that every integration (the LangGraph node, the agent middleware, the chat model)
converts the same way.

Accepted image blocks, all turned into an inline :class:`~guardrail.ImageBlock`:

- the v1 standard block ``{"type": "image", "base64": ..., "mime_type": ...}`` or ``{"type": "image", "url": ...}``
  (a ``data:`` URL, base64 or percent-encoded, is decoded to inline bytes by :mod:`guardrail.image_refs`; any other
  url, http(s) or a local file, is kept as a ``url``);
- the legacy v0 block ``{"type": "image", "source_type": "base64" | "url", "data" | "url": ...}``;
- OpenAI chat format ``{"type": "image_url", "image_url": {"url": ...}}`` (or a plain string url).

Text is a plain string or ``{"type": "text", "text": ...}``. Anything else (audio, files by id, a tool-call
block inside content, ...) is an :class:`~guardrail.InputError` naming the message, the block and its type:
a guarded call never silently drops part of what the user showed the model.

Roles: system -> ``system``, human -> ``user``, AI -> ``assistant``; a tool result is something the model is
shown, so a ``ToolMessage`` becomes a ``user`` message (its images are views of the scene, e.g. a camera tool).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from .errors import InputError
from .image_refs import decode_base64, is_data_url, parse_data_url
from .types import ImageBlock, Message, Request, TextBlock

__all__ = [
    "has_images",
    "image_blocks_of",
    "image_to_content_block",
    "message_from_guardrail",
    "message_to_guardrail",
    "messages_from_request",
    "request_from_messages",
]

_Role = Literal["system", "user", "assistant"]
_ROLES: dict[str, _Role] = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}


def request_from_messages(
    messages: Sequence[BaseMessage],
    *,
    system: SystemMessage | str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Request:
    """A guardrail ``Request`` from a LangChain conversation (``system`` is prepended when given).

    Raises :class:`~guardrail.InputError` when a message or content block cannot be converted, or when the
    conversation is empty.
    """
    converted: list[Message] = []
    if system is not None:
        text = system if isinstance(system, str) else _text_of(system, "system message")
        converted.append(Message(role="system", content=(TextBlock(text=text),)))
    for index, message in enumerate(messages):
        converted.append(_message_at(message, f"messages[{index}]"))
    if not converted:
        raise InputError("cannot build a guarded request from an empty conversation: no messages")
    return Request(messages=tuple(converted), metadata=dict(metadata or {}))


def message_to_guardrail(message: BaseMessage) -> Message:
    """One LangChain message as a guardrail ``Message``."""
    return _message_at(message, "message")


def messages_from_request(request: Request) -> list[BaseMessage]:
    """The LangChain messages of a guardrail request, with standard v1 content blocks."""
    return [message_from_guardrail(m) for m in request.messages]


def message_from_guardrail(message: Message) -> BaseMessage:
    """A guardrail ``Message`` as a LangChain message (text-only content stays a plain string)."""
    blocks: list[str | dict[str, Any]] = [
        {"type": "text", "text": b.text} if isinstance(b, TextBlock) else image_to_content_block(b)
        for b in message.content
    ]
    content: str | list[str | dict[str, Any]] = blocks
    if all(isinstance(b, TextBlock) for b in message.content):
        content = message.text
    if message.role == "system":
        return SystemMessage(content=content)
    if message.role == "assistant":
        return AIMessage(content=content)
    return HumanMessage(content=content)


def image_to_content_block(image: ImageBlock) -> dict[str, Any]:
    """The v1 standard image content block of an image (inline base64, or by url)."""
    if image.base64 is not None:
        return {"type": "image", "base64": image.base64, "mime_type": image.mime_type or "image/png"}
    return {"type": "image", "url": image.url}


def has_images(messages: Iterable[BaseMessage]) -> bool:
    """True when any message carries an image block in any accepted format (nothing else is checked)."""
    return any(_is_image_block(b) for m in messages if isinstance(m.content, list) for b in m.content)


def image_blocks_of(message: BaseMessage) -> tuple[ImageBlock, ...]:
    """The images in one message's content, converted; other blocks are ignored here."""
    if not isinstance(message.content, list):
        return ()
    return tuple(
        _image_block(b, f"message content[{i}]")
        for i, b in enumerate(message.content)
        if isinstance(b, Mapping) and _is_image_block(b)
    )


# ---------------------------------------------------------------------------------------------------------------


def _message_at(message: BaseMessage, where: str) -> Message:
    role = _ROLES.get(message.type)
    if role is None:
        raise InputError(
            f"{where}: a {type(message).__name__} (type {message.type!r}) cannot be sent to a vision-language "
            f"model; expected a system, human, AI or tool message"
        )
    content = message.content
    raw: list[Any] = [content] if isinstance(content, str) else list(content)
    blocks: list[TextBlock | ImageBlock] = []
    for index, block in enumerate(raw):
        converted = _block(block, f"{where} content[{index}]")
        if converted is not None:
            blocks.append(converted)
    if isinstance(message, ToolMessage) and message.name:
        blocks.insert(0, TextBlock(text=f"Result of tool {message.name!r}:"))
    return Message(role=role, content=tuple(blocks))


def _block(block: object, where: str) -> TextBlock | ImageBlock | None:
    if isinstance(block, str):
        return TextBlock(text=block) if block else None
    if not isinstance(block, Mapping):
        raise InputError(f"{where}: expected a string or a content block dict, got {type(block).__name__}")
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise InputError(f"{where}: text block has no string 'text', got {type(text).__name__}")
        return TextBlock(text=text) if text else None
    if _is_image_block(block):
        return _image_block(block, where)
    raise InputError(
        f"{where}: content block of type {kind!r} cannot be converted; a guarded request carries only text "
        f"blocks and image blocks (base64, data URL or http(s) URL)"
    )


def _is_image_block(block: object) -> bool:
    return isinstance(block, Mapping) and block.get("type") in ("image", "image_url")


def _image_block(block: Mapping[str, Any], where: str) -> ImageBlock:
    if block.get("type") == "image_url":
        inner = block.get("image_url")
        url = inner.get("url") if isinstance(inner, Mapping) else inner
        return _from_url(url, None, where)
    source_type = block.get("source_type")
    mime = block.get("mime_type")
    if source_type == "base64":  # v0 standard block
        return _from_base64(block.get("data"), mime, where)
    if source_type == "url":
        return _from_url(block.get("url"), mime, where)
    if source_type is not None:
        raise InputError(f"{where}: image source_type {source_type!r} is not supported; use base64 or url")
    if block.get("base64") is not None:
        return _from_base64(block.get("base64"), mime, where)
    if block.get("url") is not None:
        return _from_url(block.get("url"), mime, where)
    if block.get("file_id") is not None:
        raise InputError(f"{where}: image by file_id {block['file_id']!r} cannot be read; send base64 or a url")
    raise InputError(f"{where}: image block has neither 'base64' nor 'url'")


def _from_base64(data: object, mime: object, where: str) -> ImageBlock:
    if not isinstance(data, str) or not data:
        raise InputError(f"{where}: image base64 data must be a non-empty string, got {type(data).__name__}")
    decode_base64(data, name=f"{where}: image")  # checked here, so that a bad block names its message and place
    return ImageBlock(base64=data, mime_type=mime if isinstance(mime, str) else "image/png")


def _from_url(url: object, mime: object, where: str) -> ImageBlock:
    if not isinstance(url, str) or not url:
        raise InputError(f"{where}: image url must be a non-empty string, got {type(url).__name__}")
    if not is_data_url(url):
        return ImageBlock(url=url, mime_type=mime if isinstance(mime, str) else None)
    parsed = parse_data_url(url, name=where)
    mime_type = parsed.mime_type or (mime if isinstance(mime, str) else "image/png")
    if parsed.base64 is not None:  # kept as given
        return ImageBlock(base64=parsed.base64, mime_type=mime_type)
    return ImageBlock.from_bytes(parsed.data, mime_type)


def _text_of(message: BaseMessage, where: str) -> str:
    converted = _message_at(message, where)
    if converted.images:
        raise InputError(f"{where}: a system message cannot carry images")
    return converted.text
