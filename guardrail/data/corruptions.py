"""Graded perception stressors: image corruptions at severities 0 (identity) to 5 (hardest).

They exist to make a vision-language model misperceive on purpose, so that perception errors (and the visual
confidence meant to flag them) can be studied. Each corruption is a pure function
``(image, severity, rng) -> image``: it never modifies its input, returns a new RGB image of the same size, and
with the same ``seed`` always gives the same pixels. ``corrupt(image, kind, severity, seed)`` is the entry point;
``CORRUPTIONS`` maps every kind to its function.

Strength grows with severity for every kind (tests pin that the pixel distance to the original rises).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageFilter

from ..errors import InputError

__all__ = ["CORRUPTIONS", "MAX_SEVERITY", "Corruption", "corrupt"]

MAX_SEVERITY = 5

Corruption = Callable[[Image.Image, int, np.random.Generator], Image.Image]
"""``(rgb_image, severity in 1..5, rng) -> new rgb_image`` of the same size."""

# Per-kind strength at severities 0..5 (index = severity).
_NOISE_STD = (0.0, 25.0, 50.0, 80.0, 115.0, 160.0)  # on the 0..255 scale
_OCCLUDED_FRACTION = (0.0, 0.12, 0.25, 0.4, 0.55, 0.7)  # of the image area, in square patches
_BLUR_RADIUS = (0.0, 1.0, 2.0, 3.5, 5.0, 7.0)  # fraction of the 64 px easy-VQA side, scaled by size
_CONTRAST = (1.0, 0.5, 0.25, 0.12, 0.06, 0.03)  # remaining contrast around the mean grey
_HUE_SHIFT = (0.0, 0.04, 0.09, 0.15, 0.22, 0.3)  # of the colour wheel
_SATURATION = (1.0, 0.8, 0.6, 0.4, 0.2, 0.05)
_DOWNSCALE = (1.0, 0.6, 0.35, 0.2, 0.12, 0.07)  # side scale before scaling back up


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def gaussian_noise(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Adds independent Gaussian noise to every channel of every pixel."""
    pixels = _array(image)
    return _image(pixels + rng.normal(0.0, _NOISE_STD[severity], size=pixels.shape))


def occlusion(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Covers random square patches (about 1/5 of the side each) with random flat grey levels."""
    pixels = _array(image).copy()
    height, width = pixels.shape[:2]
    side = max(1, round(min(height, width) / 5))
    grid_h, grid_w = -(-height // side), -(-width // side)
    n_cells = grid_h * grid_w
    n_covered = round(_OCCLUDED_FRACTION[severity] * n_cells)
    for cell in rng.choice(n_cells, size=n_covered, replace=False):
        top, left = int(cell // grid_w) * side, int(cell % grid_w) * side
        pixels[top : top + side, left : left + side] = rng.uniform(0.0, 255.0)
    return _image(pixels)


def blur(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur whose radius scales with the image size (64 px: 1 to 7 px)."""
    radius = _BLUR_RADIUS[severity] * min(image.size) / 64.0
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius))


def low_contrast(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Pulls every pixel towards the image's mean grey, leaving a fraction of the contrast."""
    pixels = _array(image)
    mean = pixels.mean()
    return _image(mean + (pixels - mean) * _CONTRAST[severity])


def color_shift(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Rotates the hue (direction drawn from the seed) and desaturates: confuses colour, keeps the shape."""
    hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.float32)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    hue = (hsv[..., 0] + direction * _HUE_SHIFT[severity] * 256.0) % 256.0
    sat = hsv[..., 1] * _SATURATION[severity]
    shifted = np.stack([hue, sat, hsv[..., 2]], axis=-1)
    data = np.ascontiguousarray(np.clip(np.rint(shifted), 0, 255).astype(np.uint8))
    return Image.frombytes("HSV", image.size, data.tobytes()).convert("RGB")


def downscale(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Shrinks the image (box filter) and scales it back up (bilinear): fine detail is lost."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = _DOWNSCALE[severity]
    small = rgb.resize((max(2, round(width * scale)), max(2, round(height * scale))), Image.Resampling.BOX)
    return small.resize((width, height), Image.Resampling.BILINEAR)


CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType(
    {
        "gaussian_noise": gaussian_noise,
        "occlusion": occlusion,
        "blur": blur,
        "low_contrast": low_contrast,
        "color_shift": color_shift,
        "downscale": downscale,
    }
)
"""Every corruption kind by name."""


def corrupt(image: Image.Image, kind: str, severity: int, seed: int = 0) -> Image.Image:
    """A corrupted copy of ``image``: ``kind`` from ``CORRUPTIONS`` at ``severity`` 0..5 (0 = identity).

    Deterministic for a given ``seed``; ``image`` itself is never modified. The result is RGB.

    >>> from PIL import Image
    >>> im = Image.new("RGB", (64, 64), "red")
    >>> corrupt(im, "blur", 0).tobytes() == im.tobytes()
    True
    """
    if kind not in CORRUPTIONS:
        raise InputError(f"`kind` must be one of {sorted(CORRUPTIONS)}, got {kind!r}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= MAX_SEVERITY:
        raise InputError(f"`severity` must be an int in 0..{MAX_SEVERITY}, got {severity!r}")
    if severity == 0:
        return image.convert("RGB").copy()
    return CORRUPTIONS[kind](image, severity, np.random.default_rng([seed, severity]))
