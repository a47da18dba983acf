"""Image perturbations: seeded determinism, the blackened fraction, the paper's parameters, inputs untouched."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from guardrail.confidence.perturb import (
    PERTURBATIONS,
    blacken_patches,
    gaussian_blur,
    gaussian_noise,
    perturb_image,
    uniform_grey,
)


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(1, 256, size=(140, 168, 3), dtype=np.uint8))  # no black pixels


def test_blackening_is_seeded_and_patch_aligned(image: Image.Image) -> None:
    a = np.asarray(blacken_patches(image, patch_size=14, seed=3))
    b = np.asarray(blacken_patches(image, patch_size=14, seed=3))
    c = np.asarray(blacken_patches(image, patch_size=14, seed=4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    black = (a == 0).all(-1).reshape(10, 14, 12, 14)
    per_patch = black.all(axis=(1, 3))
    assert np.array_equal(per_patch, black.any(axis=(1, 3)))  # whole patches only
    untouched = ~per_patch.repeat(14, 0).repeat(14, 1)
    assert np.array_equal(a[untouched], np.asarray(image)[untouched])


def test_blackened_fraction_is_about_the_probability() -> None:
    big = Image.new("RGB", (448, 448), (200, 100, 50))  # 32 x 32 = 1024 patches
    fractions = [(np.asarray(blacken_patches(big, patch_size=14, seed=s)) == 0).all(-1).mean() for s in range(5)]
    assert np.mean(fractions) == pytest.approx(0.8, abs=0.03)
    assert (np.asarray(blacken_patches(big, patch_size=14, probability=0.0)) != 0).all()
    assert (np.asarray(blacken_patches(big, patch_size=14, probability=1.0)) == 0).all()


def test_partial_edge_patches_are_handled() -> None:
    odd = Image.new("RGB", (30, 17), (255, 255, 255))
    out = blacken_patches(odd, patch_size=14, probability=1.0)
    assert out.size == (30, 17)
    assert (np.asarray(out) == 0).all()


def test_noise_is_seeded_clipped_and_strong(image: Image.Image) -> None:
    a = np.asarray(gaussian_noise(image, seed=1))
    assert np.array_equal(a, np.asarray(gaussian_noise(image, seed=1)))
    assert not np.array_equal(a, np.asarray(gaussian_noise(image, seed=2)))
    assert a.dtype == np.uint8
    diff = a.astype(float) - np.asarray(image, dtype=float)
    assert 80 < diff.std() < 189  # std 189 noise, reduced by clipping to 0..255


def test_grey_and_blur(image: Image.Image) -> None:
    grey = np.asarray(uniform_grey(image))
    assert grey.shape == (140, 168, 3)
    assert (grey == 128).all()
    blurred = np.asarray(gaussian_blur(image))
    assert blurred.shape == (140, 168, 3)
    assert blurred.astype(float).std() < np.asarray(image, dtype=float).std() / 4


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_perturbations_leave_the_input_untouched(image: Image.Image, kind: str) -> None:
    before = np.asarray(image).copy()
    out = perturb_image(image, kind, patch_size=14, seed=0)  # type: ignore[arg-type]
    assert out is not image
    assert out.size == image.size
    assert np.array_equal(np.asarray(image), before)


def test_invalid_parameters_name_the_parameter(image: Image.Image) -> None:
    with pytest.raises(ValueError, match="`patch_size` must be an int >= 1"):
        blacken_patches(image, patch_size=0)
    with pytest.raises(ValueError, match="`probability` must be in"):
        blacken_patches(image, patch_size=14, probability=1.5)
    with pytest.raises(ValueError, match="`kind` must be one of blackout, noise, grey, blur"):
        perturb_image(image, "rotate")  # type: ignore[arg-type]
