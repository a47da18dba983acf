"""The easy-VQA data set, read from the files bundled in the ``easy-vqa`` wheel, with known scene content.

easy-VQA has 64x64 images of one coloured shape (3 shapes, 8 colours) and template questions about it. The
scene of every image (its shape and colour) follows from the image's own "what shape" / "what colour" questions,
so the correctness of a model's *perception* is known for every answer, not only the correctness of its answer.
Images whose questions disagree about the scene are reported (one warning with the count) and dropped.

Splits are deterministic: ``test`` is the official test set; ``calibration`` is a seeded, by-image sample of the
official training images; ``train`` is the rest of them. No image is ever in two splits.

The parsed index is built once per process (``functools.cache``); images are decoded lazily, on access.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from .._extras import require
from ..errors import InputError

__all__ = [
    "COLORS",
    "SHAPES",
    "Example",
    "QuestionType",
    "Scene",
    "Split",
    "classify_question",
    "data_dir",
    "expected_yes_no",
    "iter_images",
    "load_easyvqa",
]

logger = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")
COLORS: tuple[str, ...] = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")

QuestionType = Literal["shape", "color", "yes_no", "negated_yes_no"]
Split = Literal["train", "calibration", "test"]
_SPLITS: tuple[Split, ...] = ("train", "calibration", "test")

# Negated templates: "is there not a X", "does the image not contain a X", "is no X present".
_NEGATION = re.compile(r"\b(not|no)\b")
_SHAPE_QUESTION = re.compile(r"^what (shape|is the (\w+) shape)\b")
_COLOR_QUESTION = re.compile(r"^what (color|is the color)\b")


@dataclass(frozen=True)
class Scene:
    """What an easy-VQA image shows: one shape of one colour."""

    shape: str
    color: str

    def describe(self) -> str:
        """``"red circle"``."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Example:
    """One question about one image, with its answer and the image's known scene."""

    image_id: str
    """Unique across splits: ``"train/17"`` or ``"test/17"``."""
    image_path: Path
    question: str
    answer: str
    scene: Scene
    question_type: QuestionType
    split: Split
    subject: str | None = None
    """For yes/no questions, the colour or shape asked about (``"red"``, ``"circle"``); else ``None``."""

    def image(self) -> Image.Image:
        """The image, decoded now as RGB (a new object every call, so callers may modify it freely)."""
        with Image.open(self.image_path) as im:
            return im.convert("RGB")


def data_dir() -> Path:
    """The ``data`` folder inside the installed ``easy_vqa`` package."""
    easy_vqa = require("easy_vqa", extra="calibrate", feature="the easy-VQA data")
    return Path(str(easy_vqa.__file__)).resolve().parent / "data"


def classify_question(question: str) -> tuple[QuestionType, str | None]:
    """The type of an easy-VQA question and, for yes/no questions, the colour or shape it asks about.

    >>> classify_question("is there not a red shape?")
    ('negated_yes_no', 'red')
    >>> classify_question("what is the blue shape?")
    ('shape', None)
    """
    q = question.lower().strip()
    if _COLOR_QUESTION.match(q):
        return "color", None
    if _SHAPE_QUESTION.match(q):
        return "shape", None
    if q.startswith("what"):
        raise InputError(f"unknown easy-VQA question template: {question!r}")
    words = set(re.findall(r"[a-z]+", q))
    subjects = [w for w in (*COLORS, *SHAPES) if w in words]
    if len(subjects) != 1:
        raise InputError(f"easy-VQA yes/no question must name one colour or shape, got {question!r}")
    return ("negated_yes_no" if _NEGATION.search(q) else "yes_no"), subjects[0]


def expected_yes_no(scene: Scene, question_type: QuestionType, subject: str) -> str:
    """The right answer to a (possibly negated) yes/no question about ``subject`` for ``scene``."""
    present = subject in (scene.shape, scene.color)
    if question_type == "negated_yes_no":
        present = not present
    return "yes" if present else "no"


@dataclass(frozen=True)
class _Record:
    question: str
    answer: str
    image: int
    question_type: QuestionType
    subject: str | None


def _read_official(part: Literal["train", "test"]) -> tuple[list[_Record], dict[int, Path]]:
    root = data_dir() / part
    try:
        raw = json.loads((root / "questions.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read easy-VQA questions from {root}: {exc}") from exc
    records = []
    for question, answer, image in raw:
        qtype, subject = classify_question(question)
        records.append(_Record(question, answer, int(image), qtype, subject))
    paths = {int(p.stem): p for p in (root / "images").glob("*.png")}
    return records, paths


def _scenes(records: Sequence[_Record], part: str) -> dict[int, Scene]:
    """Each image's scene, from the constraints its own questions put on it.

    A what-shape / what-colour answer fixes that attribute; a yes/no answer says whether the asked colour or
    shape is present (inverted for negated questions). About a third of the images lack a what-shape or a
    what-colour question, and their yes/no questions usually pin the missing attribute down. Images whose
    questions contradict each other, or leave the shape or colour open, are reported and left out.
    """
    shapes: dict[int, set[str]] = {}
    colors: dict[int, set[str]] = {}
    for r in records:
        shape = shapes.setdefault(r.image, set(SHAPES))
        color = colors.setdefault(r.image, set(COLORS))
        if r.question_type == "shape":
            shape &= {r.answer}
        elif r.question_type == "color":
            color &= {r.answer}
        elif r.subject is not None:
            present = r.answer == ("no" if r.question_type == "negated_yes_no" else "yes")
            pool = shape if r.subject in SHAPES else color
            pool &= {r.subject} if present else pool - {r.subject}
    scenes: dict[int, Scene] = {}
    conflicting = undetermined = 0
    for image in sorted(shapes):
        s, c = shapes[image], colors[image]
        if len(s) == 1 and len(c) == 1:
            scenes[image] = Scene(next(iter(s)), next(iter(c)))
        elif not s or not c:
            conflicting += 1
        else:
            undetermined += 1
    if conflicting or undetermined:
        logger.warning(
            "easy-VQA %s: dropped %d image(s) whose questions disagree on the scene and %d whose questions "
            "leave the shape or colour open",
            part,
            conflicting,
            undetermined,
        )
    return scenes


@functools.cache
def _index(calibration_fraction: float, seed: int) -> tuple[Example, ...]:
    examples: list[Example] = []
    parts: tuple[Literal["train", "test"], ...] = ("train", "test")
    for part in parts:
        records, paths = _read_official(part)
        scenes = _scenes(records, part)
        split_of: dict[int, Split] = {}
        if part == "train":
            ids = sorted(i for i in scenes if i in paths)
            n_cal = round(len(ids) * calibration_fraction)
            calibration = set(random.Random(seed).sample(ids, n_cal))
            split_of = {i: ("calibration" if i in calibration else "train") for i in ids}
        else:
            split_of = {i: "test" for i in scenes if i in paths}
        for r in records:
            if r.image in split_of:
                examples.append(
                    Example(
                        image_id=f"{part}/{r.image}",
                        image_path=paths[r.image],
                        question=r.question,
                        answer=r.answer,
                        scene=scenes[r.image],
                        question_type=r.question_type,
                        split=split_of[r.image],
                        subject=r.subject,
                    )
                )
    return tuple(examples)


def load_easyvqa(
    split: Split | Sequence[Split] | None = None,
    *,
    calibration_fraction: float = 0.2,
    seed: int = 0,
) -> list[Example]:
    """The easy-VQA examples of one split (or several, or all when ``None``), in a fixed order.

    ``calibration_fraction`` of the official training images (by image, drawn with ``seed``) form the
    calibration split; the official test images form the test split.
    """
    if not 0.0 <= calibration_fraction < 1.0:
        raise InputError(f"`calibration_fraction` must be in [0, 1), got {calibration_fraction}")
    wanted: tuple[Split, ...]
    if split is None:
        wanted = _SPLITS
    elif isinstance(split, str):
        wanted = (split,)
    else:
        wanted = tuple(split)
    for s in wanted:
        if s not in _SPLITS:
            raise InputError(f"`split` must be one of {_SPLITS}, got {s!r}")
    return [e for e in _index(float(calibration_fraction), int(seed)) if e.split in wanted]


def iter_images(examples: Sequence[Example]) -> Iterator[tuple[str, Path, Scene]]:
    """Each distinct image of ``examples`` once, in first-seen order: ``(image_id, path, scene)``."""
    seen: set[str] = set()
    for e in examples:
        if e.image_id not in seen:
            seen.add(e.image_id)
            yield e.image_id, e.image_path, e.scene
