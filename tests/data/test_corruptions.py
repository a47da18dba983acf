"""Image corruptions: identity at 0, deterministic, input untouched, strength grows with severity."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from guardrail.data import CORRUPTIONS, corrupt, load_easyvqa
from guardrail.errors import InputError

KINDS = sorted(CORRUPTIONS)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return load_easyvqa("test")[0].image()


def _distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_registry_has_the_six_kinds() -> None:
    assert set(KINDS) == {"gaussian_noise", "occlusion", "blur", "low_contrast", "color_shift", "downscale"}


@pytest.mark.parametrize("kind", KINDS)
def test_severity_zero_is_identity(image: Image.Image, kind: str) -> None:
    out = corrupt(image, kind, 0, seed=3)
    assert out.tobytes() == image.tobytes()
    assert out is not image


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_given_seed(image: Image.Image, kind: str) -> None:
    assert corrupt(image, kind, 3, seed=7).tobytes() == corrupt(image, kind, 3, seed=7).tobytes()


@pytest.mark.parametrize("kind", ["gaussian_noise", "occlusion"])
def test_random_kinds_depend_on_seed(image: Image.Image, kind: str) -> None:
    assert corrupt(image, kind, 3, seed=1).tobytes() != corrupt(image, kind, 3, seed=2).tobytes()


@pytest.mark.parametrize("kind", KINDS)
def test_input_untouched_and_shape_kept(image: Image.Image, kind: str) -> None:
    before = image.tobytes()
    out = corrupt(image, kind, 5, seed=0)
    assert image.tobytes() == before
    assert out.size == image.size
    assert out.mode == "RGB"


@pytest.mark.parametrize("kind", KINDS)
def test_strength_grows_with_severity(kind: str) -> None:
    # Averaged over a few images and seeds: every step of severity moves the pixels further.
    images = [e.image() for e in load_easyvqa("test")[:40:4]]
    distances = [
        np.mean([_distance(im, corrupt(im, kind, s, seed=i)) for i, im in enumerate(images)]) for s in range(6)
    ]
    assert distances[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(distances)), distances


def test_bad_arguments_name_the_parameter(image: Image.Image) -> None:
    with pytest.raises(InputError, match="`kind` must be one of"):
        corrupt(image, "rain", 1)
    with pytest.raises(InputError, match=r"`severity` must be an int in 0\.\.5, got 6"):
        corrupt(image, "blur", 6)
    with pytest.raises(InputError, match="`severity` must be an int"):
        corrupt(image, "blur", True)  # type: ignore[arg-type]
