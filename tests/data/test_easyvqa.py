"""The easy-VQA loader: counts, scenes, question types, splits."""

from __future__ import annotations

import collections
import logging

import pytest

from guardrail.data import COLORS, SHAPES, Example, QuestionType, classify_question, load_easyvqa
from guardrail.data.easyvqa import _index, expected_yes_no
from guardrail.errors import InputError


@pytest.fixture(scope="module")
def everything() -> list[Example]:
    return load_easyvqa()


def test_splits_partition_the_images(everything: list[Example]) -> None:
    images = collections.defaultdict(set)
    for e in everything:
        images[e.split].add(e.image_id)
    assert set(images) == {"train", "calibration", "test"}
    assert not images["train"] & images["calibration"]
    assert not images["calibration"] & images["test"]
    assert all(i.startswith("test/") for i in images["test"])
    assert all(i.startswith("train/") for i in images["calibration"])
    n_train_images = len(images["train"]) + len(images["calibration"])
    assert len(images["calibration"]) == round(0.2 * n_train_images)


def test_split_is_deterministic_and_seeded() -> None:
    a = {e.image_id for e in load_easyvqa("calibration", seed=0)}
    b = {e.image_id for e in load_easyvqa("calibration", seed=0)}
    c = {e.image_id for e in load_easyvqa("calibration", seed=1)}
    assert a == b
    assert a != c


def test_scene_agrees_with_every_question(everything: list[Example]) -> None:
    for e in everything:
        assert e.scene.shape in SHAPES
        assert e.scene.color in COLORS
        if e.question_type == "shape":
            assert e.answer == e.scene.shape
        elif e.question_type == "color":
            assert e.answer == e.scene.color
        else:
            assert e.subject is not None  # a yes/no question names its colour or shape
            assert e.answer == expected_yes_no(e.scene, e.question_type, e.subject)


def test_all_question_types_present(everything: list[Example]) -> None:
    counts = collections.Counter(e.question_type for e in everything)
    assert set(counts) == {"shape", "color", "yes_no", "negated_yes_no"}
    assert min(counts.values()) > 4000


def test_most_of_the_data_survives(everything: list[Example]) -> None:
    # easy-VQA has 38,575 + 9,673 questions; images whose scene the questions leave open are dropped.
    assert 40_000 < len(everything) < 48_248
    assert len({e.image_id for e in everything if e.split == "test"}) > 750


def test_dropped_images_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    _index.cache_clear()
    with caplog.at_level(logging.WARNING, logger="guardrail.data.easyvqa"):
        load_easyvqa("test")
    assert any("leave the shape or colour open" in r.getMessage() for r in caplog.records)


def test_image_decodes_lazily_as_rgb(everything: list[Example]) -> None:
    image = everything[0].image()
    assert image.mode == "RGB"
    assert image.size == (64, 64)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("what color is the shape?", ("color", None)),
        ("what is the color of the triangle?", ("color", None)),
        ("what is the red shape?", ("shape", None)),
        ("what shape does the image contain?", ("shape", None)),
        ("is there a circle in the image?", ("yes_no", "circle")),
        ("does the image not contain a gray shape?", ("negated_yes_no", "gray")),
        ("is no teal shape present?", ("negated_yes_no", "teal")),
        ("is there not a rectangle?", ("negated_yes_no", "rectangle")),
    ],
)
def test_classify_question(question: str, expected: tuple[QuestionType, str | None]) -> None:
    assert classify_question(question) == expected


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(InputError, match="`split` must be one of"):
        load_easyvqa("validation")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="`calibration_fraction` must be in"):
        load_easyvqa(calibration_fraction=1.5)
    with pytest.raises(InputError, match="unknown easy-VQA question template"):
        classify_question("what size is the shape?")
