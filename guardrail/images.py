"""Safe image decoding: every image that reaches a model goes through ``decode_image``.

``decode_image`` takes any image reference (an image block, inline or by a ``data:`` or ``file://`` URL or a path;
encoded bytes; a path): its bytes are read by :mod:`guardrail.image_refs`, the one place references are read
(remote URLs are refused there: guardrail never fetches images). A malformed image (missing, empty, not an image,
truncated, or a decompression bomb) becomes an :class:`~guardrail.errors.ImageError` naming the problem, never a
crash deep inside a model call.

What a model is given is always 8-bit RGB, at most ``MAX_SIDE`` pixels on its longer side:

- *Memory is bounded.* Image files are read only if they are regular files of at most ``MAX_DECODED_BYTES``
  (a device such as ``/dev/zero``, a pipe or an oversized file is refused before anything is read, and nothing
  blocks: ``guardrail.image_refs.read_image_file``). An image whose decoded buffer would exceed ``MAX_DECODED_BYTES``
  (or ``MAX_PIXELS`` pixels) is refused before it is decoded; JPEGs are decoded at a reduced scale where the codec
  allows (``draft``); anything larger than ``MAX_SIDE`` is downscaled right after decoding, and the full-size
  buffer dropped, so later steps (processors, perturbations, zoom) work on a small image.
- *High bit depths are scaled, not clipped*: 16-bit greyscale (``I;16``, ``I;16B``, ...) and 32-bit integer
  (``I``, read as 16-bit data) map 0..65535 to 0..255; floating point (``F``) maps 0..1 to 0..255.
- *Transparency is flattened onto white*, as an image viewer on a white page shows it. An image with no
  visible pixel at all (every alpha 0) is refused: there is nothing for the model to see.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError
from .image_refs import MAX_IMAGE_BYTES, ImageSource, image_bytes, read_image_file

__all__ = ["MAX_DECODED_BYTES", "MAX_PIXELS", "MAX_SIDE", "decode_image", "load_image"]

logger = logging.getLogger("guardrail.images")

MAX_PIXELS = 64_000_000
"""Largest image accepted (width x height); larger ones are refused as possible decompression bombs."""

MAX_DECODED_BYTES = MAX_IMAGE_BYTES
"""Largest decoded pixel buffer accepted (Pillow keeps 1, 2 or 4 bytes a pixel, by mode): the one byte limit on
images, which also bounds the image files read (``guardrail.image_refs.read_image_file``)."""

MAX_SIDE = 2048
"""Decoded images are downscaled (aspect kept) so that their longer side is at most this many pixels."""

_WHITE = (255, 255, 255, 255)


def decode_image(
    source: ImageSource | bytes | str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
    name: str = "image",
) -> Image.Image:
    """Decode any image reference to an 8-bit RGB PIL image (see the module docstring).

    ``source``: an :class:`~guardrail.ImageBlock` (inline, or by a ``data:`` URL, a ``file://`` URL or a path),
    encoded bytes, or a reference string or path (read by :func:`guardrail.image_refs.read_image`). Every failure is
    an ``ImageError`` naming ``name`` (a file's, its path) and the problem.
    """
    data = image_bytes(source, name=name)
    if not data:
        raise ImageError(f"{name}: empty (0 bytes)")
    key = (data, max_pixels, max_side)
    with _recent_lock:
        cached = _recent.get(key)
    if cached is not None:
        return cached.copy()
    image = _decode(data, max_pixels=max_pixels, max_side=max_side, name=name)
    with _recent_lock:
        _recent[key] = image
        while len(_recent) > _RECENT_SIZE:
            _recent.pop(next(iter(_recent)))
    return image.copy()


# The same image is decoded by several steps of one guarded call (generation, re-scoring, views): the last few
# decoded images are kept (each at most MAX_SIDE x MAX_SIDE, so a few tens of MB at worst) and copies handed out.
_RECENT_SIZE = 4
_recent: dict[tuple[bytes, int, int], Image.Image] = {}
_recent_lock = threading.Lock()


def _decode(data: bytes, *, max_pixels: int, max_side: int, name: str) -> Image.Image:
    """Decode ``data`` safely to a bounded 8-bit RGB image (see the module docstring)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} (possible decompression bomb)"
                )
            decoded = width * height * _bytes_per_pixel(image.mode)
            if decoded > MAX_DECODED_BYTES:
                raise ImageError(
                    f"{name}: {width}x{height} {image.mode} pixels would take {decoded / 2**20:.0f} MiB decoded, "
                    f"over the limit of {MAX_DECODED_BYTES / 2**20:.0f} MiB"
                )
            if max(width, height) > max_side:
                image.draft(image.mode, (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: truncated or corrupt image data ({exc})") from exc
    return _to_rgb(_shrink(image, max_side), name=name)


def _bytes_per_pixel(mode: str) -> int:
    """Bytes a pixel takes in Pillow's decoded buffer: 1 for 1/L/P, 2 for 16-bit, 4 for the rest (RGB is RGBX)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` with its longer side at most ``max_side``: box-averaged by an integer factor, strip by strip.

    Working in strips keeps the extra memory to one strip (a whole-image ``resize`` or ``reduce`` of RGBA first
    makes a full-size premultiplied copy); palette and 1-bit images take the nearest pixel instead.
    """
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    factor = -(-max(width, height) // max_side)
    size = (-(-width // factor), -(-height // factor))
    if image.mode in ("P", "1"):  # indices cannot be averaged; nearest needs no full-size intermediate
        shrunk = image.resize(size, Image.Resampling.NEAREST)
    else:
        shrunk = Image.new(image.mode, size)
        rows = factor * max(1, (1 << 22) // (width * factor))  # about 4 million pixels a strip
        for top in range(0, height, rows):
            strip = image.crop((0, top, width, min(top + rows, height)))
            if image.mode.startswith("I;16"):  # reduce() does not take 16-bit modes
                part = strip.resize((size[0], -(-strip.height // factor)), Image.Resampling.BOX)
            else:
                part = strip.reduce(factor)
            shrunk.paste(part, (0, top // factor))
        shrunk.info.update(image.info)
    image.close()  # drop the full-size buffer now, not when the caller's frame ends
    return shrunk


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """Greyscale ``L`` from 16-bit, 32-bit integer or float modes, scaled to the full 0..255 range."""
    pixels = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(np.nan_to_num(pixels, nan=0.0), 0.0, 1.0) * 255.0 + 0.5
    else:
        scaled = (np.clip(pixels.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image, *, name: str) -> Image.Image:
    """8-bit RGB; transparency flattened onto white, and a fully transparent image refused."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _to_eight_bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        low, high = cast(tuple[int, int], rgba.getchannel("A").getextrema())
        if high == 0:
            raise ImageError(f"{name}: fully transparent (every pixel has alpha 0): there is nothing to see")
        if low < 255:
            logger.debug("%s: transparent pixels flattened onto white", name)
            return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
        return rgba.convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> Image.Image:
    """Read and decode an image file; a missing, unreadable, empty or oversized file, or anything but a regular file
    (a directory, a device, a pipe), is an ``ImageError`` (see ``guardrail.image_refs.read_image_file``)."""
    return decode_image(read_image_file(path), max_pixels=max_pixels, max_side=max_side, name=str(path))
