"""Named synthetic inputs for the calibration tests, in one place.

Every generator is seeded and vectorised. ``sign_changing`` is mis-calibrated with a sign that changes across
bins (over-confident in some, under-confident in others): with one sign every binned ECE collapses to
|mean c - mean y| and a wrong implementation would pass (METHOD.md section 6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from guardrail.calibration import CalibrationArtifact, DecoupledCalibrator, fit_artifact
from guardrail.calibration.collect import ScoredItem
from guardrail.data.labelled import LabelledItem
from guardrail.types import Generation, Request, Signals

Array = npt.NDArray[np.float64]


def sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-z))


def logit(p: Array) -> Array:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p) - np.log1p(-p)


def sign_changing(n: int = 2000, seed: int = 0) -> tuple[Array, Array]:
    """c ~ U(0, 1), P(y = 1 | c) = c + 0.25 sin(2 pi c): under-confident below 0.5, over-confident above."""
    rng = np.random.default_rng(seed)
    c = rng.random(n)
    p = np.clip(c + 0.25 * np.sin(2 * np.pi * c), 0.0, 1.0)
    return c, (rng.random(n) < p).astype(np.float64)


def quantized(n: int = 2000, seed: int = 1) -> tuple[Array, Array]:
    """``sign_changing`` with confidences rounded to the 0.1 grid (every value sits on a bin edge at B = 10)."""
    c, y = sign_changing(n, seed)
    return np.round(c, 1), y


def overconfident(n: int = 2000, seed: int = 2, slope: float = 0.4) -> tuple[Array, Array]:
    """Scores s with P(y = 1 | s) = sigmoid(slope * logit(s)): over-confident at both ends (every calibrator
    family can repair it)."""
    rng = np.random.default_rng(seed)
    s = rng.beta(0.7, 0.7, n)
    return s, (rng.random(n) < sigmoid(slope * logit(s))).astype(np.float64)


def decoupled_world(n: int, seed: int) -> dict[str, Array]:
    """A world where perception and reasoning fail separately.

    Perception is right with probability pv, reasoning (given right perception) with pr; a wrong perception still
    gives the right answer by luck 1 time in 13 (easy-VQA has 13 answers). The raw scores are mis-calibrated
    monotone transforms of pv and pr (visual over-, reasoning under-confident).
    """
    rng = np.random.default_rng(seed)
    pv, pr = rng.beta(4, 1.5, n), rng.beta(4, 1.5, n)
    perception = rng.random(n) < pv
    reasoning = rng.random(n) < pr
    lucky = rng.random(n) < 1 / 13
    answer = np.where(perception, reasoning, lucky)
    return {
        "visual": sigmoid(2.0 * logit(pv) + 1.0),
        "reasoning": sigmoid(0.5 * logit(pr) + 1.0),
        "holistic": sigmoid(logit(pv * pr) + 0.8),
        "perception": perception.astype(np.float64),
        "answer": answer.astype(np.float64),
        "pv": pv,
        "pr": pr,
    }


def world_artifact(
    n: int, seed: int, *, targets: list[tuple[float, float]] | None = None, fingerprint: str = "sha256:model"
) -> CalibrationArtifact:
    """An artifact fitted (platt-harmonic) on ``decoupled_world(n, seed)``, bound to model ``fingerprint``."""
    world = decoupled_world(n, seed)
    return fit_artifact(
        visual_scores=world["visual"],
        reasoning_scores=world["reasoning"],
        answer_correct=world["answer"],
        perception_correct=world["perception"],
        model_fingerprint=fingerprint,
        data_fingerprint="sha256:data",
        calibrator=DecoupledCalibrator(combiner="platt_harmonic"),
        targets=targets if targets is not None else [(0.3, 0.1)],
    )


def easyvqa_jsonl(folder: Path, n: int, *, same_image: bool = False, mislabel: bool = False) -> Path:
    """``n`` easy-VQA calibration questions as a labelled JSONL file in ``folder`` (their images beside it).

    ``same_image``: every row asks about the first image. ``mislabel``: every fourth row (from the second) states a
    wrong perception, and every fourth (from the third) a wrong answer with the perception right, so that on the
    reference model every component has right and wrong answers even on a few dozen rows.
    """
    from guardrail.data.easyvqa import COLORS, SHAPES, load_easyvqa

    def another(answer: str) -> str:
        for words in (("yes", "no"), COLORS, SHAPES):
            if answer in words:
                return words[(words.index(answer) + 1) % len(words)]
        raise AssertionError(f"unexpected easy-VQA answer {answer!r}")

    examples = load_easyvqa("calibration")
    lines = []
    for i in range(n):
        example = examples[0 if same_image else i]
        image = folder / f"{0 if same_image else i}.png"
        if not image.exists():
            example.image().save(image)
        colour, shape, answer = example.scene.color, example.scene.shape, example.answer
        if mislabel and i % 4 == 1:
            colour = COLORS[(COLORS.index(colour) + 1) % len(COLORS)]
            shape = SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
        if mislabel and i % 4 == 2:
            answer = another(answer)
        record = {
            "image": image.name,
            "question": example.question,
            "answer": answer,
            "perception": f"{colour} {shape}",
        }
        lines.append(json.dumps(record))
    path = folder / "labelled.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def labelled_row(
    perception_correct: bool | None, *, tags: dict[str, Any] | None = None, signals: Signals | None = None
) -> ScoredItem:
    """A scored calibration row with a perception label and nothing else measured: for the rules that choose a
    probe from rows (the rows' answers are never re-scored by them)."""
    item = LabelledItem(request=Request.from_question("q?", []), answer="a", tags=tags or {})
    return ScoredItem(
        item=item,
        generation=Generation(text="x", token_ids=(1,)),
        signals=signals,
        model_answer="a",
        perception_text="x",
        answer_correct=True,
        perception_correct=perception_correct,
        error=None,
        generate_seconds=0.0,
        estimate_seconds=0.0,
    )
