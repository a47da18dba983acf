"""The scenes world: 256x256 pictures of 2-5 shapes with exact labels, and questions that need counting,
comparing and relating what was seen.

Where easy-VQA has one large shape on a 64-pixel image, a scene has several shapes of 8-64 px on a source four
times the side of the reference models' input: downscaled to the model, the small ones are a few pixels wide, so a
crop of the full-resolution source shows detail the model's first look missed; and the questions (how many, more
than, left of) give reasoning something to get wrong. Everything is drawn from a seed, so every split is
reproducible without shipping images, and every label is exact.

A scene's *percept* is what a model should list in its ``<vision>`` block: every object by colour, shape and the
cell of an 8x8 grid its centre falls in (column, row; the grid of the model's 8-pixel patches), by colour.
Perception is right when the listed objects are the scene's (:func:`grade_percept`); reasoning is right when the
answer follows from what was listed (:func:`answer_from_percept`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw

from ..errors import InputError
from .easyvqa import COLORS, SHAPES

__all__ = [
    "GRID",
    "RGB",
    "SCENE_SIZE",
    "TEMPLATES",
    "SceneExample",
    "SceneObject",
    "SceneSpec",
    "answer_from_percept",
    "grade_percept",
    "load_scenes",
    "merge_percepts",
    "parse_percept",
    "percept_text",
    "quadrant_boxes",
    "questions_for",
    "random_scene",
    "render_scene",
]

SCENE_SIZE = 256
"""Side of a scene in pixels (the full-resolution source)."""
GRID = 8
"""The percept's grid: 8x8 cells, the 8-pixel patches of a 64-pixel model input."""
MIN_SIZE, MAX_SIZE = 8, 64
"""Object sizes (bounding-box side) in pixels of the full-resolution scene."""
MIN_OBJECTS, MAX_OBJECTS = 2, 5

RGB: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "teal": (0, 128, 128),
    "brown": (165, 42, 42),
    "yellow": (255, 255, 0),
}
"""easy-VQA's eight colours, as its images draw them."""

TemplateName = Literal[
    "count_all", "count_color", "count_shape", "color_of", "shape_of", "exists", "more_than", "left_of"
]
TEMPLATES: dict[TemplateName, str] = {
    "count_all": "how many shapes are there?",
    "count_color": "how many {color} shapes are there?",
    "count_shape": "how many {shape}s are there?",
    "color_of": "what color is the {shape}?",
    "shape_of": "what shape is the {color} one?",
    "exists": "is there a {color} {shape}?",
    "more_than": "are there more {shape}s than {shape2}s?",
    "left_of": "is the {color} {shape} left of the {color2} {shape2}?",
}
"""The question templates, lower-case; ``color_of`` / ``shape_of`` / ``left_of`` only where their subject is unique."""

Split = Literal["train", "calibration", "test"]
_SPLIT_SEEDS: dict[str, int] = {"train": 11, "calibration": 23, "test": 37}
_PERCEPT_ITEM = re.compile(r"\b(" + "|".join(COLORS) + r")\s+(" + "|".join(SHAPES) + r")\s+at\s+(\d)\s+(\d)")


@dataclass(frozen=True)
class SceneObject:
    """One filled shape: colour, kind, centre (x, y) and bounding-box side, in full-resolution pixels."""

    color: str
    shape: str
    x: float
    y: float
    size: int

    def cell(self, width: int = SCENE_SIZE, height: int = SCENE_SIZE) -> tuple[int, int]:
        """The (column, row) of the 8x8 grid cell holding the centre."""
        return min(GRID - 1, int(self.x * GRID / width)), min(GRID - 1, int(self.y * GRID / height))

    @property
    def name(self) -> str:
        """``"red circle"``."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class SceneSpec:
    """A scene: its objects (left to right by grid cell, then top to bottom) and its background colour."""

    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]
    width: int = SCENE_SIZE
    height: int = SCENE_SIZE

    def crop(self, box: tuple[int, int, int, int]) -> SceneSpec:
        """The scene as a crop ``(left, top, right, bottom)`` shows it: the objects whose centre is inside."""
        left, top, right, bottom = box
        inside = [
            SceneObject(o.color, o.shape, o.x - left, o.y - top, o.size)
            for o in self.objects
            if left <= o.x < right and top <= o.y < bottom
        ]
        return _ordered(inside, self.background, right - left, bottom - top)


@dataclass(frozen=True)
class SceneExample:
    """One question about one scene (or a crop of it) with its exact answer: the labels of the scenes world."""

    scene_id: str
    scene: SceneSpec
    question: str
    answer: str
    template: TemplateName
    split: Split
    box: tuple[int, int, int, int] | None = None
    """The crop of the scene the question is about (training views); ``None``: the whole scene."""

    @property
    def image_id(self) -> str:
        """Unique per picture: the scene id, and the crop box for a crop."""
        return self.scene_id if self.box is None else f"{self.scene_id}@{','.join(map(str, self.box))}"

    @property
    def visible(self) -> SceneSpec:
        """What the picture shows: the scene, or the objects whose centre is inside the crop."""
        return self.scene if self.box is None else self.scene.crop(self.box)

    def image(self) -> Image.Image:
        """The picture drawn now at full resolution (a new object every call), cropped for a crop."""
        image = render_scene(self.scene)
        return image if self.box is None else image.crop(self.box)

    @property
    def percept(self) -> str:
        """What the ``<vision>`` block should say."""
        return percept_text(self.visible)


def _ordered(objects: Sequence[SceneObject], background: tuple[int, int, int], w: int, h: int) -> SceneSpec:
    key = sorted(objects, key=lambda o: (*o.cell(w, h), o.x, o.y))
    return SceneSpec(tuple(key), background, w, h)


def random_scene(rng: random.Random) -> SceneSpec:
    """2-5 shapes of 8-64 px at random places, not overlapping (a 2 px gap), on a light background."""
    background = (rng.randint(230, 255), rng.randint(230, 255), rng.randint(230, 255))
    count = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
    placed: list[SceneObject] = []
    while len(placed) < count:
        size = rng.randint(MIN_SIZE, MAX_SIZE)
        half = size / 2
        x = rng.uniform(half + 1, SCENE_SIZE - half - 1)
        y = rng.uniform(half + 1, SCENE_SIZE - half - 1)
        if all(abs(x - o.x) > half + o.size / 2 + 2 or abs(y - o.y) > half + o.size / 2 + 2 for o in placed):
            placed.append(SceneObject(rng.choice(COLORS), rng.choice(SHAPES), x, y, size))
    return _ordered(placed, background, SCENE_SIZE, SCENE_SIZE)


def render_scene(scene: SceneSpec) -> Image.Image:
    """The scene as an RGB picture of ``scene.width`` x ``scene.height`` pixels."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        half = o.size / 2
        box = (o.x - half, o.y - half, o.x + half, o.y + half)
        fill = RGB[o.color]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "rectangle":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(o.x, o.y - half), (o.x + half, o.y + half), (o.x - half, o.y + half)], fill=fill)
    return image


def percept_text(scene: SceneSpec) -> str:
    """``"I see a red circle at 1 6, a blue triangle at 5 2."`` (grid column, then row).

    Objects are listed by colour (easy-VQA's order), then shape, then place: what to say next is then chosen by
    what things look like, which attention finds, rather than by where they are, which a small model cannot
    scan for (listed left to right, the first trained model wrote the same average object whatever the image).
    """
    w, h = scene.width, scene.height
    ordered = sorted(scene.objects, key=lambda o: (COLORS.index(o.color), SHAPES.index(o.shape), *o.cell(w, h)))
    items = [f"a {o.name} at {col} {row}" for o in ordered for col, row in [o.cell(w, h)]]
    return "I see " + ", ".join(items) + "." if items else "I see nothing."


@dataclass(frozen=True)
class Percept:
    """Objects as a percept lists them: (colour, shape, column, row)."""

    objects: tuple[tuple[str, str, int, int], ...]


def parse_percept(text: str) -> Percept:
    """The objects a ``<vision>`` text lists (anything it says that is not ``COLOR SHAPE at C R`` is ignored)."""
    return Percept(tuple((m[1], m[2], int(m[3]), int(m[4])) for m in _PERCEPT_ITEM.finditer(text.lower())))


def grade_percept(text: str, scene: SceneSpec) -> bool:
    """Whether ``text`` lists the scene's objects: the same colours and shapes, each within one grid column and
    one row of where it is (objects of one kind are matched left to right)."""
    listed = parse_percept(text).objects
    truth = [(o.color, o.shape, *o.cell(scene.width, scene.height)) for o in scene.objects]
    if Counter((c, s) for c, s, _, _ in listed) != Counter((c, s) for c, s, _, _ in truth):
        return False
    for kind in {(c, s) for c, s, _, _ in truth}:
        seen = sorted((col, row) for c, s, col, row in listed if (c, s) == kind)
        true = sorted((col, row) for c, s, col, row in truth if (c, s) == kind)
        if any(abs(a[0] - b[0]) > 1 or abs(a[1] - b[1]) > 1 for a, b in zip(seen, true, strict=True)):
            return False
    return True


def _plural(shape: str) -> str:
    return f"{shape}s"


def _answer(objects: Sequence[tuple[str, str, int, int]], template: TemplateName, slots: dict[str, str]) -> str:
    """The answer to a template question given objects (colour, shape, column, row); ``""`` when undefined."""
    if template == "count_all":
        return str(len(objects))
    if template == "count_color":
        return str(sum(c == slots["color"] for c, _, _, _ in objects))
    if template == "count_shape":
        return str(sum(s == slots["shape"] for _, s, _, _ in objects))
    if template == "color_of":
        found = [c for c, s, _, _ in objects if s == slots["shape"]]
        return found[0] if len(found) == 1 else ""
    if template == "shape_of":
        found = [s for c, s, _, _ in objects if c == slots["color"]]
        return found[0] if len(found) == 1 else ""
    if template == "exists":
        return "yes" if any((c, s) == (slots["color"], slots["shape"]) for c, s, _, _ in objects) else "no"
    if template == "more_than":
        first = sum(s == slots["shape"] for _, s, _, _ in objects)
        second = sum(s == slots["shape2"] for _, s, _, _ in objects)
        return "yes" if first > second else "no"
    a = [col for c, s, col, _ in objects if (c, s) == (slots["color"], slots["shape"])]
    b = [col for c, s, col, _ in objects if (c, s) == (slots["color2"], slots["shape2"])]
    if len(a) != 1 or len(b) != 1 or a[0] == b[0]:
        return ""
    return "yes" if a[0] < b[0] else "no"


_SLOT_PATTERNS: dict[TemplateName, re.Pattern[str]] = {
    name: re.compile(
        "^"
        + re.escape(text)
        .replace(r"\{color\}", f"(?P<color>{'|'.join(COLORS)})")
        .replace(r"\{color2\}", f"(?P<color2>{'|'.join(COLORS)})")
        .replace(r"\{shape\}", f"(?P<shape>{'|'.join(SHAPES)})")
        .replace(r"\{shape2\}", f"(?P<shape2>{'|'.join(SHAPES)})")
        + "$"
    )
    for name, text in TEMPLATES.items()
}


def classify_scene_question(question: str) -> tuple[TemplateName, dict[str, str]]:
    """The template of a scenes question and its slots; an ``InputError`` for a question of no template."""
    q = " ".join(question.lower().split())
    for name, pattern in _SLOT_PATTERNS.items():
        match = pattern.match(q)
        if match:
            return name, {k: v for k, v in match.groupdict().items() if v is not None}
    raise InputError(f"not a scenes question template: {question!r}")


def answer_from_percept(percept: str, question: str) -> str:
    """The answer that follows from a listed percept (``""`` when the question is undefined for it): the rule
    that labels reasoning right or wrong."""
    template, slots = classify_scene_question(question)
    return _answer(parse_percept(percept).objects, template, slots)


def questions_for(scene: SceneSpec, rng: random.Random, count: int) -> list[tuple[TemplateName, str, str]]:
    """Up to ``count`` distinct well-defined questions about ``scene``: ``(template, question, answer)``.

    A template is drawn first (uniformly), then its slots, so each kind of question is as common as the others;
    slots name things in the scene about half of the time for yes/no and count questions.
    """
    objects = [(o.color, o.shape, *o.cell(scene.width, scene.height)) for o in scene.objects]
    present_colors = sorted({o.color for o in scene.objects})
    present_shapes = sorted({o.shape for o in scene.objects})
    out: dict[str, tuple[TemplateName, str, str]] = {}
    for _ in range(count * 20):
        if len(out) >= count:
            break
        template: TemplateName = rng.choice(list(TEMPLATES))
        real = rng.random() < 0.5
        o1, o2 = rng.choice(scene.objects), rng.choice(scene.objects)
        slots = {
            "color": o1.color if real else rng.choice(COLORS),
            "shape": o1.shape if real or template in ("color_of",) else rng.choice(SHAPES),
            "color2": o2.color,
            "shape2": o2.shape if template == "left_of" else rng.choice([s for s in SHAPES if s != o1.shape]),
        }
        if template == "shape_of":
            slots["color"] = rng.choice(present_colors)
        if template == "color_of":
            slots["shape"] = rng.choice(present_shapes)
        if template == "left_of":
            slots["color"], slots["shape"] = o1.color, o1.shape
            if o1 is o2 or abs(o1.cell(scene.width, scene.height)[0] - o2.cell(scene.width, scene.height)[0]) < 2:
                continue  # left of only where the columns say it plainly
        answer = _answer(objects, template, slots)
        if answer:
            question = TEMPLATES[template].format(**slots)
            out.setdefault(question, (template, question, answer))
    return list(out.values())


def load_scenes(
    split: Split,
    n_scenes: int,
    *,
    questions_per_scene: int = 3,
    crop_probability: float = 0.0,
    seed: int = 0,
) -> list[SceneExample]:
    """``n_scenes`` seeded scenes of ``split`` with up to ``questions_per_scene`` questions each.

    Each split draws from its own seed stream, so no scene is in two splits; the first ``n`` scenes of a split
    are the same whatever ``n``. With ``crop_probability`` (training), a scene's questions are instead about a
    random half-side crop of it (the view a zoom gives), where that crop holds an object's centre.
    """
    if split not in _SPLIT_SEEDS:
        raise InputError(f"`split` must be one of {sorted(_SPLIT_SEEDS)}, got {split!r}")
    if n_scenes < 1 or questions_per_scene < 1:
        raise InputError("`n_scenes` and `questions_per_scene` must be >= 1")
    examples: list[SceneExample] = []
    for index in range(n_scenes):
        rng = random.Random(f"scenes/{split}/{seed}/{index}")
        scene = random_scene(rng)
        box: tuple[int, int, int, int] | None = None
        if crop_probability and rng.random() < crop_probability:
            side = SCENE_SIZE // 2
            left, top = rng.randint(0, SCENE_SIZE - side), rng.randint(0, SCENE_SIZE - side)
            box = (left, top, left + side, top + side)
            if not scene.crop(box).objects:
                box = None
        visible = scene if box is None else scene.crop(box)
        for template, question, answer in questions_for(visible, rng, questions_per_scene):
            examples.append(SceneExample(f"{split}/{index}", scene, question, answer, template, split, box))
    return examples


def quadrant_boxes(width: int = SCENE_SIZE, height: int = SCENE_SIZE) -> list[tuple[int, int, int, int]]:
    """The four half-side crops that tile a picture (left, top, right, bottom): every object's centre is in one."""
    w, h = width // 2, height // 2
    return [(0, 0, w, h), (w, 0, width, h), (0, h, w, height), (w, h, width, height)]


def merge_percepts(views: Sequence[tuple[tuple[int, int, int, int], str]], width: int, height: int) -> str:
    """One percept of the whole picture from percepts of crops of it: each listed object placed by its crop's box,
    objects of one colour and shape in the same or a neighbouring cell counted once, in :func:`percept_text`'s
    order."""
    placed: list[tuple[str, str, float, float]] = []
    cell_w, cell_h = width / GRID, height / GRID
    for (left, top, right, bottom), text in views:
        for color, shape, col, row in parse_percept(text).objects:
            x = left + (col + 0.5) * (right - left) / GRID
            y = top + (row + 0.5) * (bottom - top) / GRID
            if not any(
                c == color and s == shape and abs(x - px) < cell_w and abs(y - py) < cell_h for c, s, px, py in placed
            ):
                placed.append((color, shape, x, y))
    objects = [SceneObject(c, s, x, y, size=1) for c, s, x, y in placed]
    return percept_text(_ordered(objects, (255, 255, 255), width, height))
