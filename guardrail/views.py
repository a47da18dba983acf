"""View providers: where ``fetch_more_views`` gets more images of the scene.

A view provider is any callable ``(request, count) -> sequence of ImageBlock``. The built-in ``zoom`` provider
crops tiles of the request's first image (the centre, then the quadrants, ...) and scales them back up, so the
model sees the scene's detail at a larger size. A provider that fails or returns nothing is an error the
guard hands to the policy's ``on_error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from PIL import Image

from .errors import ViewProviderError
from .images import decode_image
from .types import ImageBlock, Request

__all__ = ["ViewProvider", "ZoomProvider", "zoom_boxes"]


@runtime_checkable
class ViewProvider(Protocol):
    """Returns up to ``count`` new images of the scene in ``request``."""

    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        """New views for ``request``."""
        ...


def zoom_boxes(width: int, height: int, count: int) -> list[tuple[int, int, int, int]]:
    """Crop boxes (left, top, right, bottom): the centre half first, then the four quadrants, then a 3x3 grid."""
    if count < 1:
        raise ValueError(f"`count` must be an int >= 1, got {count}")
    boxes = [(width // 4, height // 4, width - width // 4, height - height // 4)]
    for grid in (2, 3):
        for row in range(grid):
            for col in range(grid):
                boxes.append(
                    (col * width // grid, row * height // grid, (col + 1) * width // grid, (row + 1) * height // grid)
                )
    return boxes[:count]


class ZoomProvider:
    """Zoomed tiles of the first image of the request, each resized back to the original size."""

    def __init__(self, *, resample: Image.Resampling = Image.Resampling.BICUBIC) -> None:
        self.resample = resample

    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        """``count`` zoomed tiles (at most 14) of the request's first image."""
        images = request.images
        if not images:
            raise ViewProviderError("zoom: the request has no image to zoom into")
        original = decode_image(images[0], name="zoom source image")
        width, height = original.size
        return [
            ImageBlock.from_pil(original.crop(box).resize((width, height), self.resample))
            for box in zoom_boxes(width, height, count)
        ]
