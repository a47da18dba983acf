"""Graded perception stressors: image corruptions at severities 0 (identity) to 5 (hardest).

They exist to make a vision-language model misperceive on purpose, so that perception errors (and the visual
confidence meant to flag them) can be studied. Each corruption is a pure function
``(image, severity, rng) -> image``: it never modifies its input, returns a new RGB image of the same size, and
with the same ``seed`` always gives the same pixels. ``corrupt(image, kind, severity, seed)`` is the entry point;
``CORRUPTIONS`` maps every kind to its function.

``HELDOUT_CORRUPTIONS`` are further kinds, different in character from those (compression artefacts, impulse noise,
uneven haze, geometry), kept for *evaluation only*: they are never in ``CORRUPTIONS``, so nothing that draws from
``CORRUPTIONS`` (training augmentation, calibration, ``easyvqa_items(corruptions=None)``) ever sees them, and a
distribution-shift benchmark can measure whether the confidence still knows when the model does not.
``UNSEEN_CORRUPTIONS`` are four more evaluation-only kinds (shear, wave, motion blur, overexposure), fixed on
2026-12-07 (18:03 UTC) *before* the stability probe's views, count and weights were chosen or any artifact was fitted
with it, and never looked at while choosing (``bench/shift.py`` reports them; nothing else reads them).
``ALL_CORRUPTIONS`` is every mapping together; ``corrupt`` accepts any kind in it.

Strength grows with severity for every kind (tests pin that the pixel distance to the original rises).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageFilter

from ..errors import InputError

__all__ = [
    "ALL_CORRUPTIONS",
    "CORRUPTIONS",
    "HELDOUT_CORRUPTIONS",
    "MAX_SEVERITY",
    "UNSEEN_CORRUPTIONS",
    "Corruption",
    "check_kinds",
    "corrupt",
]

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
# Held-out kinds (evaluation only).
_JPEG_QUALITY = (100, 30, 15, 8, 4, 1)  # Pillow JPEG quality, with 4:2:0 chroma subsampling
_IMPULSE_FRACTION = (0.0, 0.03, 0.07, 0.13, 0.22, 0.35)  # of the pixels, half white, half black
_FOG_DENSITY = (0.0, 0.25, 0.4, 0.55, 0.7, 0.85)  # largest share of the haze colour in a pixel
_ROTATION_DEGREES = (0.0, 6.0, 12.0, 20.0, 30.0, 45.0)
# Unseen kinds (evaluation only, fixed before the stability probe was fitted).
_SHEAR = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6)  # horizontal shear factor
_WAVE_AMPLITUDE = (0.0, 0.02, 0.04, 0.06, 0.09, 0.12)  # of the image side, sinusoidal row/column displacement
_MOTION_LENGTH = (0.0, 0.06, 0.12, 0.2, 0.3, 0.4)  # of the image side, length of a straight motion streak
_EXPOSURE = (1.0, 1.4, 1.8, 2.3, 2.9, 3.6)  # gain on the pixel values before clipping at white


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


def jpeg(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Re-encodes the image as JPEG at falling quality (75 is a typical web default; 30 to 1 here): block
    artefacts, ringing at the shape's edges and bleeding colour (chroma is stored at half resolution)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=_JPEG_QUALITY[severity], subsampling=2)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def salt_pepper(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Impulse noise: a random share of the pixels (3 % to 35 %) turned pure white or pure black, all channels."""
    pixels = _array(image).copy()
    height, width = pixels.shape[:2]
    hit = rng.random((height, width)) < _IMPULSE_FRACTION[severity]
    salt = rng.random((height, width)) < 0.5
    pixels[hit & salt] = 255.0
    pixels[hit & ~salt] = 0.0
    return _image(pixels)


def fog(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Blends in a light grey haze whose density varies smoothly and randomly across the image: unlike
    ``low_contrast`` it is uneven and pulls towards a light grey, not the image's mean."""
    pixels = _array(image)
    height, width = pixels.shape[:2]
    coarse = rng.random((4, 4)).astype(np.float32)  # a 4x4 field, smoothly upsampled
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    field = np.clip(field, 0.0, 1.0)[..., None]
    alpha = _FOG_DENSITY[severity] * (0.6 + 0.4 * field)
    haze = np.float32(215.0)
    return _image(pixels * (1.0 - alpha) + haze * alpha)


def rotate(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Rotates about the centre (6 to 45 degrees, direction drawn from the seed), the uncovered corners filled
    with the top-left pixel (the background in easy-VQA): the shape is unchanged but seen at an angle, and may be
    clipped by the frame."""
    rgb = image.convert("RGB")
    direction = 1.0 if rng.random() < 0.5 else -1.0
    background = rgb.getpixel((0, 0))
    return rgb.rotate(direction * _ROTATION_DEGREES[severity], resample=Image.Resampling.BILINEAR, fillcolor=background)


def shear(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Shears horizontally about the centre (factor 0.1 to 0.6, direction drawn from the seed), the uncovered
    area filled with the top-left pixel: the shape is slanted, its corners move."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    k = (1.0 if rng.random() < 0.5 else -1.0) * _SHEAR[severity]
    background = rgb.getpixel((0, 0))
    # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f).
    coefficients = (1.0, k, -k * height / 2.0, 0.0, 1.0, 0.0)
    return rgb.transform(
        (width, height), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR, fillcolor=background
    )


def wave(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Displaces rows and columns sinusoidally (amplitude 2 % to 12 % of the side, random phase and one to two
    periods): edges turn wavy, as through water or a warped print."""
    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    amplitude = _WAVE_AMPLITUDE[severity] * min(height, width)
    periods = rng.uniform(1.0, 2.0, size=2)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    src_x = xs + amplitude * np.sin(2.0 * np.pi * periods[0] * ys / height + phase[0])
    src_y = ys + amplitude * np.sin(2.0 * np.pi * periods[1] * xs / width + phase[1])
    src_x = np.clip(np.rint(src_x), 0, width - 1).astype(np.intp)
    src_y = np.clip(np.rint(src_y), 0, height - 1).astype(np.intp)
    return Image.fromarray(np.ascontiguousarray(pixels[src_y, src_x]))


def motion_blur(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Averages the image along a straight streak (6 % to 40 % of the side, angle drawn from the seed), as a
    camera moving during the exposure: directional, unlike the Gaussian ``blur``."""
    pixels = _array(image)
    height, width = pixels.shape[:2]
    length = max(2, round(_MOTION_LENGTH[severity] * min(height, width)))
    angle = rng.uniform(0.0, np.pi)
    steps = np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, length)
    out = np.zeros_like(pixels)
    for step in steps:
        dy, dx = round(step * np.sin(angle)), round(step * np.cos(angle))
        out += np.roll(np.roll(pixels, dy, axis=0), dx, axis=1)
    return _image(out / length)


def overexpose(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Multiplies the pixel values by a gain (1.4 to 3.6) and clips at white, as an over-exposed photograph:
    light colours wash out to white and saturated ones lose their hue balance."""
    return _image(_array(image) * _EXPOSURE[severity])


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
"""Every corruption kind for training and calibration, by name (the held-out kinds are not here)."""

HELDOUT_CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType(
    {
        "jpeg": jpeg,
        "salt_pepper": salt_pepper,
        "fog": fog,
        "rotate": rotate,
    }
)
"""Corruption kinds held out for evaluation only: never used for training, tuning or calibration."""

UNSEEN_CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType(
    {
        "shear": shear,
        "wave": wave,
        "motion_blur": motion_blur,
        "overexpose": overexpose,
    }
)
"""Evaluation-only kinds fixed before the stability probe was fitted (2026-12-07), never looked at while choosing
its views: ``bench/shift.py``'s figure for damage nobody tuned for."""

ALL_CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType(
    {**CORRUPTIONS, **HELDOUT_CORRUPTIONS, **UNSEEN_CORRUPTIONS}
)
"""``CORRUPTIONS``, ``HELDOUT_CORRUPTIONS`` and ``UNSEEN_CORRUPTIONS`` together: every kind ``corrupt`` accepts."""


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple, each checked to be in ``ALL_CORRUPTIONS``: an unknown one is an ``InputError`` that
    lists the calibration kinds and the held-out ones. A single string is one kind, not a sequence of letters.

    >>> check_kinds(["blur", "jpeg"])
    ('blur', 'jpeg')
    """
    wanted = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    for kind in wanted:
        if kind not in ALL_CORRUPTIONS:
            raise InputError(
                f"`kind` must be one of {sorted(CORRUPTIONS)} or, held out for evaluation, one of "
                f"{sorted(HELDOUT_CORRUPTIONS)} or {sorted(UNSEEN_CORRUPTIONS)}, got {kind!r}"
            )
    return wanted


def corrupt(image: Image.Image, kind: str, severity: int, seed: int = 0) -> Image.Image:
    """A corrupted copy of ``image``: ``kind`` from ``CORRUPTIONS`` or ``HELDOUT_CORRUPTIONS`` at ``severity`` 0..5
    (0 = identity).

    Deterministic for a given ``seed``; ``image`` itself is never modified. The result is RGB.

    >>> from PIL import Image
    >>> im = Image.new("RGB", (64, 64), "red")
    >>> corrupt(im, "blur", 0).tobytes() == im.tobytes()
    True
    """
    check_kinds((kind,))
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= MAX_SEVERITY:
        raise InputError(f"`severity` must be an int in 0..{MAX_SEVERITY}, got {severity!r}")
    if severity == 0:
        return image.convert("RGB").copy()
    return ALL_CORRUPTIONS[kind](image, severity, np.random.default_rng([seed, severity]))
