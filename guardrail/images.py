"""Safe image decoding: every image that reaches a model goes through ``decode_image``.

A malformed image (missing, empty, not an image, truncated, or a decompression bomb) becomes an
:class:`~guardrail.errors.ImageError` naming the problem, never a crash deep inside a model call.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import ImageError
from .types import ImageBlock

__all__ = ["MAX_PIXELS", "decode_image", "load_image"]

MAX_PIXELS = 64_000_000
"""Largest image accepted (width x height); larger ones are refused as possible decompression bombs."""


def decode_image(source: ImageBlock | bytes, *, max_pixels: int = MAX_PIXELS, name: str = "image") -> Image.Image:
    """Decode an inline image block or encoded bytes to an RGB PIL image, fully loaded and verified."""
    if isinstance(source, ImageBlock):
        if source.base64 is None:
            raise ImageError(f"{name}: only inline (base64) images can be decoded, got url {source.url!r}")
        try:
            data = base64.b64decode(source.base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"{name}: base64 data is not valid: {exc}") from exc
    else:
        data = source
    if not data:
        raise ImageError(f"{name}: empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} (possible decompression bomb)"
                )
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: truncated or corrupt image data ({exc})") from exc
    return image.convert("RGB")


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read and decode an image file; a missing or unreadable file is an ``ImageError`` too."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return decode_image(data, max_pixels=max_pixels, name=str(path))
