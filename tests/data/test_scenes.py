"""The scenes world: scenes as specified, exact labels, percepts that grade and merge as documented."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from guardrail.data.easyvqa import COLORS, SHAPES
from guardrail.data.labelled import scenes_items
from guardrail.data.scenes import (
    RGB,
    SCENE_SIZE,
    TEMPLATES,
    answer_from_percept,
    classify_scene_question,
    grade_percept,
    load_scenes,
    merge_percepts,
    parse_percept,
    percept_text,
    quadrant_boxes,
    random_scene,
    render_scene,
)
from guardrail.errors import InputError


def test_scenes_have_two_to_five_separate_shapes_of_the_allowed_sizes_on_a_light_background() -> None:
    rng = random.Random(0)
    counts: Counter[int] = Counter()
    for _ in range(300):
        scene = random_scene(rng)
        counts[len(scene.objects)] += 1
        assert all(c >= 230 for c in scene.background)
        for i, a in enumerate(scene.objects):
            assert a.color in COLORS
            assert a.shape in SHAPES
            assert 8 <= a.size <= 64
            assert a.size / 2 <= a.x <= SCENE_SIZE - a.size / 2
            assert a.size / 2 <= a.y <= SCENE_SIZE - a.size / 2
            for b in scene.objects[i + 1 :]:  # bounding boxes apart on one axis at least: no overlap
                apart_x = abs(a.x - b.x) > (a.size + b.size) / 2
                apart_y = abs(a.y - b.y) > (a.size + b.size) / 2
                assert apart_x or apart_y
    assert set(counts) == {2, 3, 4, 5}


def test_a_rendered_scene_shows_each_object_in_its_colour_at_its_centre() -> None:
    scene = random_scene(random.Random(3))
    pixels = np.asarray(render_scene(scene))
    assert pixels.shape == (SCENE_SIZE, SCENE_SIZE, 3)
    for o in scene.objects:
        assert tuple(pixels[int(o.y), int(o.x)]) == RGB[o.color]


def test_every_answer_is_what_the_true_percept_implies_and_templates_are_all_used() -> None:
    examples = load_scenes("test", 400)
    assert {e.template for e in examples} == set(TEMPLATES)
    for e in examples:
        assert e.question == e.question.lower()
        assert answer_from_percept(e.percept, e.question) == e.answer
        assert grade_percept(e.percept, e.scene)


def test_splits_are_disjoint_and_reproducible() -> None:
    train = {e.scene for e in load_scenes("train", 200)}
    test = load_scenes("test", 200)
    assert not train & {e.scene for e in test}
    assert load_scenes("test", 200) == test
    assert load_scenes("test", 50) == [e for e in test if int(e.scene_id.split("/")[1]) < 50]


def test_percept_grading_wants_the_same_objects_near_their_places() -> None:
    scene = load_scenes("test", 1)[0].scene
    right = percept_text(scene)
    assert grade_percept(right, scene)
    first = scene.objects[0]
    other = next(c for c in COLORS if c != first.color)
    assert not grade_percept(right.replace(f"{first.color} {first.shape}", f"{other} {first.shape}", 1), scene)
    assert not grade_percept(right.split(",")[0] + ".", scene)  # objects missing
    col, row = first.cell()
    far = (col + 4) % 8
    assert not grade_percept(right.replace(f"at {col} {row}", f"at {far} {row}", 1), scene)


def test_question_templates_parse_and_unknown_questions_are_refused() -> None:
    assert classify_scene_question("Is the red circle left of the blue triangle?") == (
        "left_of",
        {"color": "red", "shape": "circle", "color2": "blue", "shape2": "triangle"},
    )
    with pytest.raises(InputError, match="not a scenes question"):
        classify_scene_question("what is the meaning of life?")
    assert parse_percept("I see a red circle at 1 2, a blue square at 3 4.").objects == (("red", "circle", 1, 2),)


def test_percepts_of_the_four_quadrants_merge_into_the_whole_scene() -> None:
    for e in load_scenes("test", 100)[::3]:
        views = [(box, percept_text(e.scene.crop(box))) for box in quadrant_boxes()]
        assert grade_percept(merge_percepts(views, SCENE_SIZE, SCENE_SIZE), e.scene)


def test_scenes_items_grade_perception_by_the_scene() -> None:
    items = scenes_items("test", limit=12)
    assert len(items) == 12
    examples = load_scenes("test", 4)
    assert items[0].request.question == examples[0].question
    assert items[0].grade_perception(examples[0].percept) is True
    assert items[0].grade_perception("I see nothing.") is False
    assert items[0].tags["question_type"] == examples[0].template
