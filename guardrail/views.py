"""View providers: where ``fetch_more_views`` gets more images of the scene; percept mergers, which put what the
model saw in tiles of it back together.

A view provider is any callable ``(request, count) -> sequence of ImageBlock``. The built-in ``zoom`` provider
crops tiles of the request's first image (the centre, then the quadrants, ...) and scales them back up, so the
model sees the scene's detail at a larger size. A provider that fails or returns nothing is an error the
guard hands to the policy's ``on_error``.

A *tile* provider (:class:`TileProvider`, e.g. the built-in ``tiles``) also says where each view lies in the
source: ``tiles(request, count)`` crops the full-resolution source into a grid, each crop at its own size (the
backend scales each to the model's input, so a small shape fills more of it than in the whole picture). For
``fetch_more_views`` mode ``tile`` the model looks at each tile alone, and a :class:`PerceptMerger` turns the
percepts of the tiles into one percept of the whole scene, which the model then reasons on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from .errors import ViewProviderError
from .images import decode_image
from .types import Box, ImageBlock, Request

__all__ = [
    "PerceptMerger",
    "Tile",
    "TileProvider",
    "TilesProvider",
    "Tiling",
    "ViewProvider",
    "ZoomProvider",
    "tile_boxes",
    "zoom_boxes",
]


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


# ---------------------------------------------------------------------------------------------------------------
# Tiles: views that say where they lie in the source, and the percepts of tiles merged.


@dataclass(frozen=True)
class Tile:
    """One crop of the source image and where it lies in it."""

    box: Box
    image: ImageBlock


@dataclass(frozen=True)
class Tiling:
    """The tiles of a source image of ``width`` x ``height`` pixels."""

    width: int
    height: int
    tiles: tuple[Tile, ...]


@runtime_checkable
class TileProvider(Protocol):
    """A view provider whose views are tiles of the source with their boxes (``fetch_more_views`` mode ``tile``)."""

    def tiles(self, request: Request, count: int) -> Tiling:
        """``count`` tiles of the scene in ``request``."""
        ...


@runtime_checkable
class PerceptMerger(Protocol):
    """One percept of the whole source from the percepts of its tiles: ``views`` are (box, percept) pairs, the
    box in pixels of the ``width`` x ``height`` source. How percepts are written (and so merged) is the model's
    world's: the scenes world's is ``guardrail.data.scenes.merge_percepts``."""

    def __call__(self, views: Sequence[tuple[Box, str]], width: int, height: int) -> str:
        """The merged percept."""
        ...


TILE_COUNTS = (4, 9, 16)
"""The tile counts ``tile_boxes`` makes: square grids of 2x2, 3x3 and 4x4 tiles that cover the source."""


def tile_boxes(width: int, height: int, count: int) -> list[Box]:
    """The boxes of a ``k`` x ``k`` grid covering a ``width`` x ``height`` image (``count`` = k², one of
    :data:`TILE_COUNTS`), row by row."""
    grid = math.isqrt(count) if type(count) is int and count > 0 else 0
    if count not in TILE_COUNTS or grid * grid != count:
        raise ValueError(f"`count` must be one of {', '.join(map(str, TILE_COUNTS))} (a square grid), got {count!r}")
    return [
        (col * width // grid, row * height // grid, (col + 1) * width // grid, (row + 1) * height // grid)
        for row in range(grid)
        for col in range(grid)
    ]


class TilesProvider:
    """A grid of crops of the request's first image at full resolution, each at its own size (never resized here:
    the backend scales each to the model's input). A :class:`TileProvider`; as a plain view provider its views are
    the crops alone."""

    def tiles(self, request: Request, count: int) -> Tiling:
        """``count`` tiles (4, 9 or 16: a square grid) of the request's first image, with their boxes."""
        images = request.images
        if not images:
            raise ViewProviderError("tiles: the request has no image to tile")
        try:
            source = decode_image(images[0], name="tiles source image")
            width, height = source.size
            boxes = tile_boxes(width, height, count)
        except ValueError as exc:
            raise ViewProviderError(f"tiles: {exc}") from exc
        if min(width, height) < math.isqrt(count):
            raise ViewProviderError(f"tiles: a {width}x{height} image is too small for {count} tiles")
        return Tiling(width, height, tuple(Tile(box, ImageBlock.from_pil(source.crop(box))) for box in boxes))

    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        """The crops of :meth:`tiles`, without their boxes."""
        return [tile.image for tile in self.tiles(request, count).tiles]
