"""Labelled questions for calibration and evaluation: from a JSONL file, or from easy-VQA under corruptions.

A ``LabelledItem`` is one question about one image with its right answer and, where known, what a correct
perception must name (``perception``: e.g. ``("red", "circle")``). JSONL lines look like::

    {"image": "img/0.png", "question": "What colour is the shape?", "answer": "red", "perception": "red circle"}

``perception`` is optional (a string of words or a list); relative image paths are read from the file's folder.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import load_image
from ..responses import grade_perception
from ..types import ImageBlock, Request
from .scenes import SceneSpec, grade_percept, load_scenes

__all__ = ["LabelledItem", "easyvqa_items", "read_jsonl", "scenes_items"]


@dataclass(frozen=True)
class LabelledItem:
    """One labelled question: the request, the right answer, what correct perception names, and tags."""

    request: Request
    answer: str
    perception: tuple[str, ...] | None = None
    vocabulary: tuple[str, ...] | None = None
    """Words of the same kind as ``perception`` (e.g. all colours and shapes): naming another one is an error."""
    tags: Mapping[str, str] = field(default_factory=dict)
    perception_grader: Callable[[str], bool] | None = field(default=None, compare=False)
    """For worlds whose percept is more than a set of words (the scenes world's objects and places): the rule that
    grades a ``<vision>`` text; it takes precedence over ``perception`` / ``vocabulary``."""

    def grade_perception(self, text: str | None) -> bool | None:
        """Whether ``text`` (the model's ``<vision>`` block; ``None``: it wrote none) names what the image shows;
        ``None`` when the item does not say."""
        if self.perception_grader is not None:
            return self.perception_grader(text or "")
        if text is None and self.perception is not None:
            return None
        return grade_perception(text or "", self.perception, self.vocabulary)


def read_jsonl(path: str | os.PathLike[str]) -> list[LabelledItem]:
    """Items from a JSONL file; a bad line is an ``InputError`` naming ``FILE:LINE`` and the problem."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    items = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            items.append(_item_from_line(path, number, line))
    if not items:
        raise InputError(f"{path}: no labelled items (the file is empty)")
    return items


def _item_from_line(path: Path, number: int, line: str) -> LabelledItem:
    where = f"{path}:{number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object")
    for key in ("image", "question", "answer"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise InputError(f"{where}: {key!r} must be a non-empty string")
    unknown = set(data) - {"image", "question", "answer", "perception", "tags"}
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}; expected image, question, answer, perception")
    perception = data.get("perception")
    if isinstance(perception, str):
        perception = perception.split()
    if perception is not None and not (
        isinstance(perception, list) and perception and all(isinstance(w, str) for w in perception)
    ):
        raise InputError(f"{where}: 'perception' must be a string or a list of strings")
    image_path = Path(data["image"])
    if not image_path.is_absolute():
        image_path = path.parent / image_path
    load_image(image_path)  # refuse a bad image here, with its path, rather than inside a model call
    tags = {"line": str(number), **{str(k): str(v) for k, v in dict(data.get("tags") or {}).items()}}
    return LabelledItem(
        request=Request.from_question(data["question"], [ImageBlock.from_path(image_path)]),
        answer=data["answer"],
        perception=None if perception is None else tuple(w.lower() for w in perception),
        tags=tags,
    )


def easyvqa_items(
    split: str,
    *,
    limit: int | None = None,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = (0, 1, 2, 3, 4, 5),
    seed: int = 0,
) -> list[LabelledItem]:
    """easy-VQA questions of ``split``, each image corrupted by a seeded draw of kind and severity.

    ``corruptions=None`` uses every kind in ``CORRUPTIONS`` (never a held-out one); ``()`` keeps images clean; a
    list of names may also name kinds from ``HELDOUT_CORRUPTIONS`` or ``UNSEEN_CORRUPTIONS``, for evaluation.
    ``limit`` takes a seeded random subset of questions (the same for the same seed).
    """
    from .corruptions import CORRUPTIONS, check_kinds
    from .easyvqa import COLORS, SHAPES, load_easyvqa

    kinds = tuple(CORRUPTIONS) if corruptions is None else check_kinds(corruptions)
    examples = load_easyvqa(split)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    if limit is not None and limit < len(examples):
        chosen = np.sort(rng.choice(len(examples), size=limit, replace=False))
        examples = [examples[i] for i in chosen]
    vocabulary = (*COLORS, *SHAPES)
    items = []
    for index, example in enumerate(examples):
        image, damage = _corrupted(example.image(), kinds, severities, rng, seed=seed * 1_000_003 + index)
        items.append(
            LabelledItem(
                request=Request.from_question(example.question, [image]),
                answer=example.answer,
                perception=(example.scene.color, example.scene.shape),
                vocabulary=vocabulary,
                tags={"image_id": example.image_id, "question_type": example.question_type, **damage},
            )
        )
    return items


def _corrupted(
    image: Image.Image, kinds: Sequence[str], severities: Sequence[int], rng: np.random.Generator, *, seed: int
) -> tuple[Image.Image, dict[str, str]]:
    """``image`` under a seeded draw of kind and severity from ``kinds`` (none: as it is), and the draw as tags."""
    from .corruptions import corrupt

    if not kinds:
        return image, {"corruption": "none", "severity": "0"}
    kind = str(kinds[int(rng.integers(len(kinds)))])
    severity = int(severities[int(rng.integers(len(severities)))])
    image = corrupt(image, kind, severity, seed=seed)
    return image, {"corruption": kind if severity > 0 else "none", "severity": str(severity)}


def iter_batches(items: Sequence[LabelledItem], size: int) -> Iterator[Sequence[LabelledItem]]:
    """``items`` in consecutive batches of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def scenes_items(
    split: str,
    *,
    limit: int,
    corruptions: Sequence[str] | None = (),
    severities: Sequence[int] = (0, 1, 2, 3, 4, 5),
    questions_per_scene: int = 3,
    seed: int = 0,
) -> list[LabelledItem]:
    """Scenes-world questions of ``split`` (``limit`` of them, from as many seeded scenes as that takes), at full
    resolution; ``corruptions=()`` (the default) keeps them clean, ``None`` draws from every training kind.

    Each item grades perception by the scene's objects (:func:`~guardrail.data.scenes.grade_percept`) and carries
    its template and object count as tags.
    """
    from .corruptions import CORRUPTIONS, check_kinds

    kinds = tuple(CORRUPTIONS) if corruptions is None else check_kinds(corruptions)
    n_scenes = max(1, -(-limit // questions_per_scene))
    examples = load_scenes(split, n_scenes, questions_per_scene=questions_per_scene, seed=seed)  # type: ignore[arg-type]
    while len(examples) < limit:  # a scene with fewer well-defined questions than asked for: draw a few more
        n_scenes += max(1, (limit - len(examples)) // questions_per_scene + 1)
        examples = load_scenes(split, n_scenes, questions_per_scene=questions_per_scene, seed=seed)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    items = []
    for index, example in enumerate(examples[:limit]):
        image, damage = _corrupted(example.image(), kinds, severities, rng, seed=seed * 1_000_003 + index)
        items.append(
            LabelledItem(
                request=Request.from_question(example.question, [image]),
                answer=example.answer,
                perception=None,
                tags={
                    "image_id": example.image_id,
                    "question_type": example.template,
                    "objects": str(len(example.scene.objects)),
                    **damage,
                },
                perception_grader=functools.partial(_grade_scene, example.scene),
            )
        )
    return items


def _grade_scene(scene: SceneSpec, text: str) -> bool:
    return grade_percept(text, scene)
