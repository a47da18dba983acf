"""Image corruptions, the calibration kinds and the held-out ones alike: identity at 0, deterministic, input
untouched, strength grows with severity; the held-out kinds never reach ``CORRUPTIONS``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from guardrail.data import ALL_CORRUPTIONS, CORRUPTIONS, HELDOUT_CORRUPTIONS, UNSEEN_CORRUPTIONS, corrupt, load_easyvqa
from guardrail.data.labelled import easyvqa_items
from guardrail.errors import InputError

KINDS = sorted(ALL_CORRUPTIONS)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return load_easyvqa("test")[0].image()


def _distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_registry_has_the_six_kinds() -> None:
    assert set(CORRUPTIONS) == {"gaussian_noise", "occlusion", "blur", "low_contrast", "color_shift", "downscale"}


def test_heldout_kinds_are_kept_apart_from_calibration() -> None:
    assert set(HELDOUT_CORRUPTIONS) == {"jpeg", "salt_pepper", "fog", "rotate"}
    assert not set(HELDOUT_CORRUPTIONS) & set(CORRUPTIONS)
    assert set(ALL_CORRUPTIONS) == set(CORRUPTIONS) | set(HELDOUT_CORRUPTIONS) | set(UNSEEN_CORRUPTIONS)
    assert all(ALL_CORRUPTIONS[k] is f for k, f in HELDOUT_CORRUPTIONS.items())


def test_unseen_kinds_are_apart_from_every_other_kind() -> None:
    assert set(UNSEEN_CORRUPTIONS) == {"shear", "wave", "motion_blur", "overexpose"}
    assert not set(UNSEEN_CORRUPTIONS) & (set(CORRUPTIONS) | set(HELDOUT_CORRUPTIONS))
    assert all(ALL_CORRUPTIONS[k] is f for k, f in UNSEEN_CORRUPTIONS.items())


@pytest.mark.parametrize("kind", KINDS)
def test_severity_zero_is_identity(image: Image.Image, kind: str) -> None:
    out = corrupt(image, kind, 0, seed=3)
    assert out.tobytes() == image.tobytes()
    assert out is not image


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_given_seed(image: Image.Image, kind: str) -> None:
    assert corrupt(image, kind, 3, seed=7).tobytes() == corrupt(image, kind, 3, seed=7).tobytes()


@pytest.mark.parametrize("kind", ["gaussian_noise", "occlusion", "salt_pepper", "fog"])
def test_random_kinds_depend_on_seed(image: Image.Image, kind: str) -> None:
    assert corrupt(image, kind, 3, seed=1).tobytes() != corrupt(image, kind, 3, seed=2).tobytes()


def test_rotation_direction_depends_on_seed(image: Image.Image) -> None:
    assert len({corrupt(image, "rotate", 3, seed=s).tobytes() for s in range(8)}) == 2


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
    with pytest.raises(InputError, match=r"held out for evaluation, one of \['fog', 'jpeg', 'rotate', 'salt_pepper'\]"):
        corrupt(image, "rain", 1)
    with pytest.raises(InputError, match=r"`severity` must be an int in 0\.\.5, got 6"):
        corrupt(image, "blur", 6)
    with pytest.raises(InputError, match="`severity` must be an int"):
        corrupt(image, "blur", True)  # a bool is an int to the type checker, not to corrupt


def test_salt_pepper_sets_pixels_to_white_or_black(image: Image.Image) -> None:
    # Impulse noise sets a pixel to pure white or pure black, or leaves it as it was.
    before = np.asarray(image, dtype=np.int16)
    after = np.asarray(corrupt(image, "salt_pepper", 5, seed=1), dtype=np.int16)
    changed = (after != before).any(axis=-1)
    assert 0.2 < changed.mean() < 0.5
    assert {tuple(p) for p in after[changed]} <= {(0, 0, 0), (255, 255, 255)}


def test_easyvqa_items_take_heldout_kinds_only_when_named() -> None:
    items = easyvqa_items("test", limit=30, seed=2, corruptions=["jpeg", "fog"], severities=(5,))
    assert {i.tags["corruption"] for i in items} == {"jpeg", "fog"}
    default = easyvqa_items("test", limit=60, seed=2)
    assert not {i.tags["corruption"] for i in default} & set(HELDOUT_CORRUPTIONS)
    with pytest.raises(InputError, match="`kind` must be one of"):
        easyvqa_items("test", limit=3, corruptions=["blur", "rain"])
