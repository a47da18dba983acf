"""Questions about easy-VQA images reworded beyond easy-VQA's own wording: a distribution shift in the language.

easy-VQA asks in a few lowercase templates ("what color is the shape?", "is there not a red shape?"). The
templates here, written by us, keep the meaning and change the form: other case, synonyms ("colour", "hue",
"tint", "figure", "object", "form"), other sentence forms ("Name the shape's colour.", "Can you see a circle
here?"), other negations ("Does the picture lack a circle?") and odd punctuation or spacing. Each template has an
easy-VQA question type, so its right answer follows from the image's known ``Scene``.

The templates come in two groups:

* ``"calibration"``: may be used by anyone tuning or calibrating (on the calibration or training split).
* ``"evaluation"``: **evaluation only**. Never use them for training, tuning, probe choice or calibration, or an
  evaluation on them no longer measures a shift the guard has not seen. ``reworded_items`` therefore draws them
  only from the test split. No template is in both groups, and no evaluation template shares its wording (case
  and spacing aside) with a calibration template or with easy-VQA.

``TEMPLATES`` lists every template (``templates(group)`` one group) so a benchmark can report per-template
results; ``reworded_items`` builds labelled items from them, seeded and deterministic.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from PIL import Image

from ..errors import InputError
from ..types import Request
from .corruptions import MAX_SEVERITY, check_kinds, corrupt
from .easyvqa import COLORS, SHAPES, QuestionType, Scene, Split, expected_yes_no, iter_images, load_easyvqa
from .labelled import LabelledItem

__all__ = [
    "GROUPS",
    "TEMPLATES",
    "SubjectKind",
    "Template",
    "TemplateGroup",
    "reworded_items",
    "templates",
]

TemplateGroup = Literal["calibration", "evaluation"]
"""``"calibration"``: free to tune and calibrate on; ``"evaluation"``: for evaluation only, never for tuning."""
GROUPS: tuple[TemplateGroup, ...] = get_args(TemplateGroup)

SubjectKind = Literal["color", "shape"]
"""What a yes/no template asks about: one of ``COLORS`` or one of ``SHAPES``."""

_PLACEHOLDERS = frozenset({"subject", "Subject", "SUBJECT"})


@dataclass(frozen=True)
class Template:
    """One rewording: a question text with its easy-VQA question type.

    Yes/no texts name their subject with a placeholder: ``{subject}`` (as written in ``COLORS`` / ``SHAPES``),
    ``{Subject}`` (capitalised) or ``{SUBJECT}`` (upper case); ``subject_kind`` says whether it is a colour or a
    shape. Colour and shape questions have no placeholder and no ``subject_kind``.
    """

    id: str
    """Unique, stable, for per-template results: ``"eval_color_name_imperative"``."""
    group: TemplateGroup
    question_type: QuestionType
    text: str
    subject_kind: SubjectKind | None = None

    def __post_init__(self) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(self.text) if name is not None}
        yes_no = self.question_type in ("yes_no", "negated_yes_no")
        if self.group not in GROUPS:
            raise InputError(f"template {self.id!r}: `group` must be one of {GROUPS}, got {self.group!r}")
        if yes_no and (self.subject_kind not in get_args(SubjectKind) or len(fields) != 1 or fields - _PLACEHOLDERS):
            raise InputError(
                f"template {self.id!r}: a yes/no template needs a `subject_kind` and one placeholder of "
                f"{sorted(_PLACEHOLDERS)}"
            )
        if not yes_no and (self.subject_kind is not None or fields):
            raise InputError(f"template {self.id!r}: a {self.question_type} template takes no subject")

    def question(self, subject: str | None = None) -> str:
        """The question's text, with ``subject`` (a colour or shape, for yes/no templates) filled in.

        >>> templates("evaluation")[0].question()
        'Which colour does the shape have?'
        """
        if self.subject_kind is None:
            if subject is not None:
                raise InputError(f"template {self.id!r} takes no subject, got {subject!r}")
            return self.text
        allowed = COLORS if self.subject_kind == "color" else SHAPES
        if subject not in allowed:
            raise InputError(f"template {self.id!r}: `subject` must be one of {allowed}, got {subject!r}")
        return self.text.format(subject=subject, Subject=subject.capitalize(), SUBJECT=subject.upper())

    def answer(self, scene: Scene, subject: str | None = None) -> str:
        """The right answer for ``scene``: its colour, its shape, or ``"yes"`` / ``"no"`` about ``subject``."""
        self.question(subject)  # checks the subject
        if self.question_type == "color":
            return scene.color
        if self.question_type == "shape":
            return scene.shape
        assert subject is not None
        return expected_yes_no(scene, self.question_type, subject)


def _t(template_id: str, question_type: QuestionType, text: str, subject_kind: SubjectKind | None = None) -> Template:
    group: TemplateGroup = "evaluation" if template_id.startswith("eval_") else "calibration"
    return Template(template_id, group, question_type, text, subject_kind)


TEMPLATES: tuple[Template, ...] = (
    # Calibration-safe: case, spelling, synonyms and plain rephrasings.
    _t("cal_color_capitalised", "color", "What color is the shape?"),
    _t("cal_color_british", "color", "what colour is the shape?"),
    _t("cal_color_hue", "color", "What hue does the object have?"),
    _t("cal_shape_capitalised", "shape", "What shape is this?"),
    _t("cal_shape_kind_of_figure", "shape", "What kind of figure is in the image?"),
    _t("cal_shape_which_appears", "shape", "Which shape appears in the picture?"),
    _t("cal_yes_no_color_object_in_picture", "yes_no", "Is there a {subject} object in the picture?", "color"),
    _t("cal_yes_no_color_coloured", "yes_no", "Is the shape coloured {subject}?", "color"),
    _t("cal_yes_no_shape_shown", "yes_no", "Is a {subject} shown?", "shape"),
    _t("cal_negated_color_not", "negated_yes_no", "Is the object not {subject}?", "color"),
    _t("cal_negated_shape_none_shown", "negated_yes_no", "Is it true that no {subject} is shown?", "shape"),
    _t("cal_negated_shape_not_a", "negated_yes_no", "Is the figure not a {subject}?", "shape"),
    # Evaluation only: other sentence forms, imperatives, odd case and spacing, negation without "not"/"no".
    _t("eval_color_which_colour_have", "color", "Which colour does the shape have?"),
    _t("eval_color_name_imperative", "color", "Name the shape's colour."),
    _t("eval_color_tint_painted", "color", "Which tint is the figure painted in?"),
    _t("eval_color_shouted_spaced", "color", "WHAT   COLOUR IS THE FORM ?"),
    _t("eval_shape_tell_me", "shape", "Tell me what shape you see."),
    _t("eval_shape_which_form", "shape", "Which form is drawn here?"),
    _t("eval_shape_identify_please", "shape", "Identify the object in this picture, please!"),
    _t("eval_shape_spaced_lowercase", "shape", "  what kind of figure   is this??"),
    _t("eval_yes_no_color_object_is", "yes_no", "Is the object {subject}?", "color"),
    _t("eval_yes_no_color_tint", "yes_no", "Does the figure have a {subject} tint?", "color"),
    _t("eval_yes_no_shape_can_you_see", "yes_no", "Can you see a {subject} here?", "shape"),
    _t("eval_yes_no_shape_would_you_call", "yes_no", "Would you call this figure a {Subject}?", "shape"),
    _t("eval_negated_color_would_you_say", "negated_yes_no", "Would you say the figure is not {subject}?", "color"),
    _t(
        "eval_negated_color_isnt", "negated_yes_no", "Is it the case that the object's colour isn't {subject}?", "color"
    ),
    _t("eval_negated_shape_lacks", "negated_yes_no", "Does the picture lack a {subject}?", "shape"),
    _t("eval_negated_shape_shouted", "negated_yes_no", "IS THERE NO {SUBJECT} IN THIS IMAGE?", "shape"),
)
"""Every template, calibration group first, each group ordered by question type."""


def templates(group: TemplateGroup | None = None) -> tuple[Template, ...]:
    """The templates of ``group`` (all of them when ``None``), in the order of ``TEMPLATES``."""
    if group is not None and group not in GROUPS:
        raise InputError(f"`group` must be one of {GROUPS}, got {group!r}")
    return tuple(t for t in TEMPLATES if group is None or t.group == group)


def reworded_items(
    split: Split = "test",
    *,
    group: TemplateGroup = "evaluation",
    limit: int | None = None,
    seed: int = 0,
    corruptions: Sequence[str] = (),
    severities: Sequence[int] = tuple(range(MAX_SEVERITY + 1)),
) -> list[LabelledItem]:
    """One reworded question per easy-VQA image of ``split``, as labelled items, in a fixed order.

    Each image gets a seeded choice among the templates of ``group``; a yes/no template gets a seeded subject of its
    kind, the image's own colour or shape half the time and another one otherwise, so "yes" and "no" are about
    equally common. ``limit`` takes a seeded subset of the images (all of them when ``None`` or larger).
    ``corruptions`` (kinds from ``CORRUPTIONS`` or ``HELDOUT_CORRUPTIONS``; none by default) corrupts each image
    with a seeded draw of kind and severity from ``severities``. Everything is drawn from ``seed``: the same
    arguments give the same items, and the questions do not depend on ``corruptions``.

    The ``"evaluation"`` templates are for evaluation only, so ``group="evaluation"`` is refused on any split but
    ``"test"``.

    Tags: ``image_id``, ``split``, ``question_type``, ``template`` (its id), ``group``, ``rewording``
    (``"template"``), ``subject`` (yes/no only), ``corruption`` and ``severity``.
    """
    chosen_templates = templates(group)
    if group == "evaluation" and split != "test":
        raise InputError(
            f"the evaluation templates are for evaluation only, on the test split; got `split`={split!r} "
            "(use group='calibration' to tune or calibrate)"
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InputError(f"`limit` must be a non-negative int or None, got {limit!r}")
    kinds = check_kinds(corruptions)
    for severity in severities:
        if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= MAX_SEVERITY:
            raise InputError(f"`severities` must be ints in 0..{MAX_SEVERITY}, got {severity!r}")
    if kinds and not severities:
        raise InputError("`severities` must not be empty when `corruptions` are given")

    images = list(iter_images(load_easyvqa(split)))
    if limit is not None and limit < len(images):
        picked = np.sort(np.random.default_rng([seed, 0]).choice(len(images), size=limit, replace=False))
        images = [images[i] for i in picked]
    question_rng = np.random.default_rng([seed, 1])
    corruption_rng = np.random.default_rng([seed, 2])
    vocabulary = (*COLORS, *SHAPES)
    items = []
    for index, (image_id, path, scene) in enumerate(images):
        # Three draws per image whatever the template, so each item's question depends only on seed and position.
        template = chosen_templates[int(question_rng.integers(len(chosen_templates)))]
        present = bool(question_rng.random() < 0.5)
        other = float(question_rng.random())
        subject = None
        if template.subject_kind is not None:
            pool, own = (COLORS, scene.color) if template.subject_kind == "color" else (SHAPES, scene.shape)
            others = [s for s in pool if s != own]
            subject = own if present else others[int(other * len(others))]
        question = template.question(subject)
        tags = {
            "image_id": image_id,
            "split": split,
            "question_type": template.question_type,
            "template": template.id,
            "group": template.group,
            "rewording": "template",
        }
        if subject is not None:
            tags["subject"] = subject
        with Image.open(path) as decoded:
            image = decoded.convert("RGB")
        kind, severity = "none", 0
        if kinds:
            kind = kinds[int(corruption_rng.integers(len(kinds)))]
            severity = int(severities[int(corruption_rng.integers(len(severities)))])
            image = corrupt(image, kind, severity, seed=seed * 1_000_003 + index)
        tags["corruption"] = kind if severity > 0 else "none"
        tags["severity"] = str(severity)
        items.append(
            LabelledItem(
                request=Request.from_question(question, [image]),
                answer=template.answer(scene, subject),
                perception=(scene.color, scene.shape),
                vocabulary=vocabulary,
                tags=tags,
            )
        )
    return items
