"""Reworded easy-VQA questions: the two template groups, right answers for the scene, seeded and deterministic."""

from __future__ import annotations

import collections
import json
import re

import pytest

from guardrail.data import COLORS, SHAPES, Scene, data_dir, load_easyvqa
from guardrail.data.corruptions import HELDOUT_CORRUPTIONS
from guardrail.data.labelled import LabelledItem
from guardrail.data.reworded import GROUPS, TEMPLATES, Template, reworded_items, templates
from guardrail.errors import InputError

TYPES = {"color", "shape", "yes_no", "negated_yes_no"}


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _renderings(template: Template) -> list[str]:
    if template.subject_kind is None:
        return [template.question()]
    return [template.question(s) for s in (COLORS if template.subject_kind == "color" else SHAPES)]


@pytest.fixture(scope="module")
def scenes() -> dict[str, Scene]:
    return {e.image_id: e.scene for e in load_easyvqa()}


@pytest.fixture(scope="module")
def evaluation() -> list[LabelledItem]:
    return reworded_items("test", seed=5)


def test_groups_share_no_template() -> None:
    ids = [t.id for t in TEMPLATES]
    assert len(ids) == len(set(ids))
    assert {t.group for t in TEMPLATES} == set(GROUPS) == {"calibration", "evaluation"}
    cal, ev = templates("calibration"), templates("evaluation")
    assert len(cal) + len(ev) == len(TEMPLATES)
    assert not {t.id for t in cal} & {t.id for t in ev}
    assert not {_normalized(t.text) for t in cal} & {_normalized(t.text) for t in ev}
    assert all(t.id.startswith("eval_") for t in ev)
    assert all(t.id.startswith("cal_") for t in cal)


@pytest.mark.parametrize("group", ["calibration", "evaluation"])
def test_every_question_type_in_each_group(group: str) -> None:
    chosen = templates(group)  # type: ignore[arg-type]
    counts = collections.Counter(t.question_type for t in chosen)
    assert set(counts) == TYPES
    assert min(counts.values()) >= 3
    for qtype in ("yes_no", "negated_yes_no"):  # yes/no about colours and about shapes
        assert {t.subject_kind for t in chosen if t.question_type == qtype} == {"color", "shape"}
    if group == "evaluation":
        assert len(chosen) >= 12


def test_templates_are_not_easyvqa_wording() -> None:
    easyvqa = set()
    for part in ("train", "test"):
        easyvqa |= {q for q, _, _ in json.loads((data_dir() / part / "questions.json").read_text())}
    for template in TEMPLATES:
        for question in _renderings(template):
            assert question not in easyvqa, template.id
            if template.group == "evaluation":  # not even up to case and spacing
                assert _normalized(question) not in {_normalized(q) for q in easyvqa}, template.id


def test_rendering_fills_the_subject_in_its_case() -> None:
    by_id = {t.id: t for t in TEMPLATES}
    assert by_id["eval_yes_no_shape_can_you_see"].question("circle") == "Can you see a circle here?"
    assert by_id["eval_yes_no_shape_would_you_call"].question("triangle") == "Would you call this figure a Triangle?"
    assert by_id["eval_negated_shape_shouted"].question("rectangle") == "IS THERE NO RECTANGLE IN THIS IMAGE?"
    with pytest.raises(InputError, match="`subject` must be one of"):
        by_id["eval_yes_no_shape_can_you_see"].question("red")
    with pytest.raises(InputError, match="takes no subject"):
        by_id["eval_color_name_imperative"].question("red")


def test_bad_templates_are_refused() -> None:
    with pytest.raises(InputError, match="needs a `subject_kind`"):
        Template("x", "evaluation", "yes_no", "Is it red?")
    with pytest.raises(InputError, match="needs a `subject_kind`"):
        Template("x", "evaluation", "yes_no", "Is it {colour}?", "color")
    with pytest.raises(InputError, match="takes no subject"):
        Template("x", "evaluation", "color", "What {subject}?", "color")
    with pytest.raises(InputError, match="`group` must be one of"):
        Template("x", "tuning", "color", "What colour?")  # type: ignore[arg-type]


def test_answers_follow_from_the_scene(evaluation: list[LabelledItem], scenes: dict[str, Scene]) -> None:
    for item in evaluation:
        scene = scenes[item.tags["image_id"]]
        qtype = item.tags["question_type"]
        assert item.perception == (scene.color, scene.shape)
        assert item.vocabulary == (*COLORS, *SHAPES)
        if qtype == "color":
            assert item.answer == scene.color
        elif qtype == "shape":
            assert item.answer == scene.shape
        else:
            present = item.tags["subject"] in (scene.color, scene.shape)
            assert item.answer == ("yes" if present == (qtype == "yes_no") else "no"), item.request.question


def test_named_templates_give_the_named_answer(evaluation: list[LabelledItem], scenes: dict[str, Scene]) -> None:
    seen: collections.Counter[str] = collections.Counter()
    for item in evaluation:
        scene = scenes[item.tags["image_id"]]
        question = item.request.question
        if question == "Which colour does the shape have?":
            assert item.answer == scene.color
        elif question == "Tell me what shape you see.":
            assert item.answer == scene.shape
        elif question.startswith("Does the picture lack a "):  # negated without "not" or "no"
            assert item.answer == ("no" if scene.shape in question else "yes")
        elif question.startswith("Is the object ") and not question.startswith("Is the object not"):
            assert item.answer == ("yes" if question == f"Is the object {scene.color}?" else "no")
        else:
            continue
        seen[question.split()[0]] += 1
    assert set(seen) == {"Which", "Tell", "Does", "Is"}


def test_items_carry_their_template_and_cover_the_group(evaluation: list[LabelledItem]) -> None:
    by_id = {t.id: t for t in TEMPLATES}
    n_images = len({e.image_id for e in load_easyvqa("test")})
    assert len(evaluation) == n_images
    assert len({i.tags["image_id"] for i in evaluation}) == n_images
    for item in evaluation:
        template = by_id[item.tags["template"]]
        assert item.tags["group"] == template.group == "evaluation"
        assert item.tags["question_type"] == template.question_type
        assert item.tags["rewording"] == "template"
        assert item.tags["split"] == "test"
        assert item.tags["corruption"] == "none"
        assert item.tags["severity"] == "0"
        assert item.request.question == template.question(item.tags.get("subject"))
        assert len(item.request.images) == 1
    used = collections.Counter(i.tags["template"] for i in evaluation)
    assert set(used) == {t.id for t in templates("evaluation")}


def test_yes_and_no_about_equally_common(evaluation: list[LabelledItem]) -> None:
    answers = [i.answer for i in evaluation if i.tags["question_type"] in ("yes_no", "negated_yes_no")]
    assert len(answers) > 200
    assert 0.4 < answers.count("yes") / len(answers) < 0.6
    subjects_present = [
        i.tags["subject"] in (i.perception or ())
        for i in evaluation
        if i.tags["question_type"] in ("yes_no", "negated_yes_no")
    ]
    assert 0.4 < sum(subjects_present) / len(subjects_present) < 0.6


def test_deterministic_for_a_seed_and_seeded() -> None:
    first = reworded_items("test", limit=50, seed=3)
    again = reworded_items("test", limit=50, seed=3)
    other = reworded_items("test", limit=50, seed=4)
    assert len(first) == 50
    assert [i.request for i in first] == [i.request for i in again]
    assert [(i.answer, dict(i.tags)) for i in first] == [(i.answer, dict(i.tags)) for i in again]
    assert [i.request.question for i in first] != [i.request.question for i in other]


def test_questions_do_not_depend_on_corruptions() -> None:
    clean = reworded_items("test", limit=40, seed=1)
    shifted = reworded_items("test", limit=40, seed=1, corruptions=sorted(HELDOUT_CORRUPTIONS), severities=(3, 5))
    assert [i.request.question for i in clean] == [i.request.question for i in shifted]
    assert [i.answer for i in clean] == [i.answer for i in shifted]
    assert {i.tags["corruption"] for i in shifted} <= set(HELDOUT_CORRUPTIONS)
    assert {i.tags["severity"] for i in shifted} == {"3", "5"}
    assert [i.request.images for i in clean] != [i.request.images for i in shifted]


def test_calibration_group_on_the_calibration_split(scenes: dict[str, Scene]) -> None:
    items = reworded_items("calibration", group="calibration", limit=60, seed=0)
    assert len(items) == 60
    assert {i.tags["group"] for i in items} == {"calibration"}
    assert all(i.tags["image_id"].startswith("train/") for i in items)
    calibration_ids = {t.id for t in templates("calibration")}
    assert {i.tags["template"] for i in items} <= calibration_ids


def test_evaluation_templates_are_refused_off_the_test_split() -> None:
    for split in ("calibration", "train"):
        with pytest.raises(InputError, match="evaluation only"):
            reworded_items(split, group="evaluation", limit=5)


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(InputError, match="`group` must be one of"):
        reworded_items("test", group="tuning", limit=5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="`limit` must be"):
        reworded_items("test", limit=-1)
    with pytest.raises(InputError, match="`kind` must be one of"):
        reworded_items("test", limit=5, corruptions=["rain"])
    with pytest.raises(InputError, match="`severities` must be ints"):
        reworded_items("test", limit=5, corruptions=["jpeg"], severities=(6,))
    with pytest.raises(InputError, match="`split` must be one of"):
        reworded_items("validation", group="calibration", limit=5)  # type: ignore[arg-type]
