"""Image perturbations for the visual-certainty probe (METHOD.md 3.1).

Each takes a PIL image already at the model's input resolution (see the backend's ``model_images``), so that a
blackened patch lines up with one patch of the vision encoder, and returns a new image: pure, out-of-place and,
where random, seeded (the same seed gives the same image on every machine, from NumPy's PCG64 generator).

The defaults are the paper's: patch blackening with probability 0.8 (the default probe), Gaussian noise of
std 189 on the 0..255 scale, uniform grey 128, Gaussian blur of radius 10.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "PERTURBATIONS",
    "PerturbationKind",
    "blacken_patches",
    "draws_differ",
    "gaussian_blur",
    "gaussian_noise",
    "perturb_image",
    "perturbed_variants",
    "uniform_grey",
]

PerturbationKind = Literal["blackout", "noise", "grey", "blur"]
PERTURBATIONS: tuple[str, ...] = get_args(PerturbationKind)


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def blacken_patches(image: Image.Image, *, patch_size: int, probability: float = 0.8, seed: int = 0) -> Image.Image:
    """Set each ``patch_size`` square (edge patches may be partial) to black with ``probability``.

    One Bernoulli draw per patch, on a grid anchored at the top-left corner like the vision encoder's patches.
    """
    if patch_size < 1:
        raise ValueError(f"`patch_size` must be an int >= 1 (the vision encoder's patch), got {patch_size}")
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"`probability` must be in [0, 1] (chance a patch is blackened), got {probability}")
    pixels = _rgb_array(image)
    height, width = pixels.shape[:2]
    rows, cols = -(-height // patch_size), -(-width // patch_size)
    grid = np.random.default_rng(seed).random((rows, cols)) < probability
    mask = np.repeat(np.repeat(grid, patch_size, axis=0), patch_size, axis=1)[:height, :width]
    return Image.fromarray(np.where(mask[..., None], np.uint8(0), pixels))


def gaussian_noise(image: Image.Image, *, std: float = 189.0, seed: int = 0) -> Image.Image:
    """Add independent Gaussian noise of ``std`` (0..255 scale) to every channel, clipped to 0..255."""
    if std < 0:
        raise ValueError(f"`std` must be >= 0 (noise on the 0..255 scale), got {std}")
    pixels = _rgb_array(image).astype(np.float32)
    noise = np.random.default_rng(seed).normal(0.0, std, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8))


def uniform_grey(image: Image.Image, *, level: int = 128) -> Image.Image:
    """An image of the same size filled with grey ``level`` (all content removed)."""
    if not 0 <= level <= 255:
        raise ValueError(f"`level` must be in 0..255, got {level}")
    return Image.new("RGB", image.size, (level, level, level))


def gaussian_blur(image: Image.Image, *, radius: float = 10.0) -> Image.Image:
    """PIL's Gaussian blur of ``radius`` pixels."""
    if radius < 0:
        raise ValueError(f"`radius` must be >= 0, got {radius}")
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=radius))


def perturb_image(
    image: Image.Image,
    kind: PerturbationKind = "blackout",
    *,
    patch_size: int = 14,
    seed: int = 0,
    probability: float = 0.8,
    noise_std: float = 189.0,
    grey_level: int = 128,
    blur_radius: float = 10.0,
) -> Image.Image:
    """Apply the perturbation ``kind`` with its parameters (the others are ignored)."""
    if kind == "blackout":
        return blacken_patches(image, patch_size=patch_size, probability=probability, seed=seed)
    if kind == "noise":
        return gaussian_noise(image, std=noise_std, seed=seed)
    if kind == "grey":
        return uniform_grey(image, level=grey_level)
    if kind == "blur":
        return gaussian_blur(image, radius=blur_radius)
    raise ValueError(f"`kind` must be one of {', '.join(PERTURBATIONS)}, got {kind!r}")


_RANDOM_KINDS = ("blackout", "noise")


def draws_differ(kind: PerturbationKind, probability: float) -> bool:
    """Whether repeated draws give different images: noise, and blackout with 0 < probability < 1."""
    if kind == "blackout":
        return 0.0 < probability < 1.0
    return kind in _RANDOM_KINDS


def perturbed_variants(
    images: Sequence[Image.Image],
    kind: PerturbationKind,
    *,
    draws: int,
    patch_size: int,
    seed: int,
    probability: float,
) -> list[list[Image.Image]]:
    """``draws`` perturbed copies of the images (one when every draw would be the same image).

    Draw k of image i uses seed ``seed + k * len(images) + i``: reproducible, and distinct across images and draws.
    """
    count = draws if draws_differ(kind, probability) else 1
    return [
        [
            perturb_image(im, kind, patch_size=patch_size, seed=seed + k * len(images) + i, probability=probability)
            for i, im in enumerate(images)
        ]
        for k in range(count)
    ]
