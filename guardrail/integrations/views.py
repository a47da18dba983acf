"""View providers from user code: recapture the scene, or adapt any callable or LangChain tool returning images.

The guard's ``fetch_more_views`` action asks a :class:`~guardrail.views.ViewProvider` ``(request, count)`` for
more images of the scene. Besides the built-in ``zoom`` (crops of the original), these adapt what users have:

- :class:`RecaptureProvider` wraps ``capture()``, a callable returning a *fresh* image of the same scene (a
  camera frame, a re-rendered page), called once per view asked for;
- :func:`as_view_provider` adapts a callable ``(request, count) -> images`` or a LangChain tool (any
  ``BaseTool``; its arguments built by ``tool_args(request, count)``) into a provider.

Whatever comes back may be an ``ImageBlock``, a PIL image, encoded bytes, a file path, a LangChain image
content block (base64, data URL or url), a ``ToolMessage`` or a list of those. A failing call, a result with no
image, or something that is not an image raises :class:`~guardrail.ViewProviderError` (the cause chained), so
the guard turns it into the policy's ``on_error``; LangGraph control flow is never caught.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from PIL import Image

from ..errors import GuardrailError, ViewProviderError
from ..images import decode_image
from ..messages import image_blocks_of
from ..types import ImageBlock, Request
from ..views import ViewProvider

__all__ = ["CallableViewProvider", "RecaptureProvider", "ToolViewProvider", "as_view_provider", "to_image_blocks"]


class RecaptureProvider:
    """Fresh images of the scene from ``capture()``, called once for each view asked for."""

    def __init__(self, capture: Callable[[], object], *, name: str = "recapture") -> None:
        if not callable(capture):
            raise TypeError(f"`capture` must be a callable returning an image, got {type(capture).__name__}")
        self.capture = capture
        self.name = name

    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        """``count`` fresh captures."""
        views: list[ImageBlock] = []
        for _ in range(count):
            views.extend(_call(self.name, self.capture))
        return _checked(self.name, views, count)


class CallableViewProvider:
    """A callable ``(request, count) -> images`` (any of the accepted image forms) as a view provider."""

    def __init__(self, function: Callable[[Request, int], object], *, name: str | None = None) -> None:
        if not callable(function):
            raise TypeError(f"`function` must be callable, got {type(function).__name__}")
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", type(function).__name__))

    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        """Up to ``count`` images from the callable."""
        return _checked(self.name, _call(self.name, lambda: self.function(request, count)), count)


class ToolViewProvider:
    """A LangChain tool returning images as a view provider; ``tool_args(request, count)`` builds its input."""

    def __init__(self, tool: BaseTool, *, tool_args: Callable[[Request, int], Mapping[str, Any]] | None = None) -> None:
        if not isinstance(tool, BaseTool):
            raise TypeError(f"`tool` must be a LangChain BaseTool, got {type(tool).__name__}")
        self.tool = tool
        self.tool_args = tool_args or (lambda request, count: {})
        self.name = tool.name

    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        """Up to ``count`` images from one tool call."""
        call = {
            "type": "tool_call",
            "name": self.tool.name,
            "args": dict(self.tool_args(request, count)),
            "id": "views",
        }
        return _checked(self.name, _call(self.name, lambda: self.tool.invoke(call)), count)


def as_view_provider(
    source: BaseTool | ViewProvider | Callable[[Request, int], object],
    *,
    tool_args: Callable[[Request, int], Mapping[str, Any]] | None = None,
) -> ViewProvider:
    """A view provider from a LangChain tool or a callable ``(request, count) -> images``."""
    if isinstance(source, BaseTool):
        return ToolViewProvider(source, tool_args=tool_args)
    if tool_args is not None:
        raise TypeError("`tool_args` applies only to a LangChain tool")
    return CallableViewProvider(source)


def to_image_blocks(value: object, *, name: str = "view provider") -> list[ImageBlock]:
    """Every image in ``value`` (see the module docstring for the accepted forms); others raise."""
    if isinstance(value, ImageBlock):
        return [value]
    if isinstance(value, Image.Image):
        return [ImageBlock.from_pil(value)]
    if isinstance(value, bytes):
        return [ImageBlock.from_bytes(value)]
    if isinstance(value, Path):
        return [ImageBlock.from_path(value)]
    if isinstance(value, ToolMessage):  # images in the content, and in the artifact of a content_and_artifact tool
        artifact = [] if value.artifact is None else to_image_blocks(value.artifact, name=name)
        return [*image_blocks_of(value), *artifact]
    if isinstance(value, Mapping):
        carrier = ToolMessage(content=[dict(value)], tool_call_id="view")
        return list(image_blocks_of(carrier))
    if isinstance(value, list | tuple):
        return [block for item in value for block in to_image_blocks(item, name=name)]
    raise ViewProviderError(f"{name}: returned {type(value).__name__}, which is not an image")


def _call(name: str, function: Callable[[], object]) -> list[ImageBlock]:
    """Call user code; translate its errors (never LangGraph's control flow) and check every image decodes."""
    try:
        value = function()
    except GraphBubbleUp:
        raise
    except ViewProviderError:
        raise
    except Exception as exc:
        raise ViewProviderError(f"{name}: failed: {type(exc).__name__}: {exc}") from exc
    try:
        blocks = to_image_blocks(value, name=name)
        for block in blocks:
            if block.base64 is not None:
                decode_image(block, name="image")
    except ViewProviderError:
        raise
    except (GuardrailError, OSError, ValueError) as exc:
        raise ViewProviderError(f"{name}: returned an unusable image: {exc}") from exc
    return blocks


def _checked(name: str, views: list[ImageBlock], count: int) -> list[ImageBlock]:
    if not views:
        raise ViewProviderError(f"{name}: returned no images")
    return views[:count]
