"""The scenes model's first answers, where they fail, and what each candidate remedy could repair (issue 29).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/scenes_quality.py [--model DIR] [--n 600] [--samples 8]

On ``--n`` questions of the scenes world's test split (clean, full resolution; the model sees them downscaled to
its input), the greedy first answers are graded three ways: the answer, the percept (``<vision>`` lists the
scene's objects near their places) and the reasoning (the answer follows from what the percept lists). Then, on
the items each remedy would be applied to, with no remedy chosen by any score yet (this measures what a remedy
*can* repair, before any routing):
- **crops of the full-resolution source** (the four half-side quadrants, each downscaled by the model's
  processor as the whole scene was): the model's percepts of the crops, merged into one percept of the scene;
  repaired = a wrong first percept becomes right, broken = a right one becomes wrong;
- **self-consistency over sampled re-asks** (``--samples`` answers at temperature 0.7, seeded; the majority
  answer, ties to the first answer): on reasoning errors (right percept, wrong answer) and on right answers.
Results go to bench/results/scenes_quality.json with the commit and the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _provenance import provenance, relative
from rich.console import Console
from rich.progress import track
from rich.table import Table

from guardrail.data.scenes import (
    SCENE_SIZE,
    SceneExample,
    answer_from_percept,
    grade_percept,
    load_scenes,
    merge_percepts,
    quadrant_boxes,
)
from guardrail.pretrained import load_backend
from guardrail.reference import scenes_model_path
from guardrail.responses import answers_match, parse_response
from guardrail.types import Generation, GenerationOptions, Request

RESULTS = Path(__file__).resolve().parent / "results" / "scenes_quality.json"


def _answers(backend: Any, requests: Sequence[Request], batch: int = 32) -> list[Generation]:
    out: list[Generation] = []
    for start in track(range(0, len(requests), batch), description="answering", transient=True):
        chunk = list(requests[start : start + batch])
        out.extend(backend.generate_batch(chunk, [GenerationOptions()] * len(chunk)))
    return out


def _grade(example: SceneExample, text: str) -> dict[str, Any]:
    parsed = parse_response(text)
    percept = parsed.perception_text if parsed.has_vision_tag else ""
    implied = answer_from_percept(percept, example.question)
    return {
        "answer": parsed.answer_text,
        "percept": percept,
        "answer_correct": answers_match(parsed.answer_text, example.answer),
        "perception_correct": grade_percept(percept, example.scene),
        "reasoning_correct": bool(implied) and answers_match(parsed.answer_text, implied),
    }


def _rate(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    """The share of ``rows`` where ``key`` holds; ``None`` for no rows (never a made-up 0 or 1)."""
    return sum(bool(r[key]) for r in rows) / len(rows) if rows else None


def _complement(rate: float | None) -> float | None:
    return None if rate is None else 1 - rate


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "n": len(rows),
        "answer_error": _complement(_rate(rows, "answer_correct")),
        "perception_error": _complement(_rate(rows, "perception_correct")),
        "reasoning_error": _complement(_rate(rows, "reasoning_correct")),
        "reasoning_error_given_right_percept": _complement(
            _rate([r for r in rows if r["perception_correct"]], "reasoning_correct")
        ),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=scenes_model_path())
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    origin = provenance(__file__, list(sys.argv[1:] if argv is None else argv))
    console = Console(stderr=True)
    started = time.perf_counter()
    backend = load_backend(args.model)
    examples = load_scenes("test", -(-args.n // 3))[: args.n]
    requests = [Request.from_question(e.question, [e.image()]) for e in examples]
    rows = [_grade(e, g.text) for e, g in zip(examples, _answers(backend, requests), strict=True)]

    by_template: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_objects: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e, r in zip(examples, rows, strict=True):
        by_template[e.template].append(r)
        by_objects[str(len(e.scene.objects))].append(r)

    # Crops of the full-resolution source, on every item (the rates below split them by the first percept).
    crop_requests = [
        Request.from_question(e.question, [e.image().crop(box)]) for e in examples for box in quadrant_boxes()
    ]
    crop_texts = [g.text for g in _answers(backend, crop_requests)]
    crops: list[dict[str, Any]] = []
    for i, (e, r) in enumerate(zip(examples, rows, strict=True)):
        views = [(box, parse_response(crop_texts[4 * i + k]).perception_text) for k, box in enumerate(quadrant_boxes())]
        merged = merge_percepts(views, SCENE_SIZE, SCENE_SIZE)
        implied = answer_from_percept(merged, e.question)
        crops.append(
            {
                "first_percept_correct": r["perception_correct"],
                "merged_percept_correct": grade_percept(merged, e.scene),
                "implied_answer_correct": bool(implied) and answers_match(implied, e.answer),
            }
        )
    wrong_first = [c for c in crops if not c["first_percept_correct"]]
    right_first = [c for c in crops if c["first_percept_correct"]]

    # Self-consistency over sampled re-asks, on reasoning errors and on right answers.
    reasoning_errors = [i for i, r in enumerate(rows) if r["perception_correct"] and not r["answer_correct"]]
    right = [i for i, r in enumerate(rows) if r["answer_correct"]][: max(len(reasoning_errors), 50)]
    votes: dict[int, dict[str, Any]] = {}
    for i in track(reasoning_errors + right, description="self-consistency", console=console):
        answers = [rows[i]["answer"]]
        for k in range(args.samples):
            g = backend.generate(requests[i], GenerationOptions(temperature=0.7, seed=1000 + k, attempt=1))
            answers.append(parse_response(g.text).answer_text)
        counts = Counter(a for a in answers if a is not None)
        top = max(counts.values()) if counts else 0
        majority = next((a for a in answers if a is not None and counts[a] == top), None)
        votes[i] = {"right": answers_match(majority, examples[i].answer)}

    result = {
        **origin,
        "model": relative(args.model),
        "split": "test (clean, full resolution 256x256)",
        "first_answer": _summary(rows),
        "by_template": {k: _summary(v) for k, v in sorted(by_template.items())},
        "by_objects": {k: _summary(v) for k, v in sorted(by_objects.items())},
        "crops": {
            "views": "the four half-side quadrants of the full-resolution source",
            "applied_to_wrong_percepts": len(wrong_first),
            "repaired": _rate(wrong_first, "merged_percept_correct"),
            "applied_to_right_percepts": len(right_first),
            "broken": _complement(_rate(right_first, "merged_percept_correct")),
            "implied_answer_right_on_wrong_percepts": _rate(wrong_first, "implied_answer_correct"),
        },
        "self_consistency": {
            "samples": args.samples,
            "temperature": 0.7,
            "applied_to_reasoning_errors": len(reasoning_errors),
            "repaired": _rate([votes[i] for i in reasoning_errors], "right"),
            "applied_to_right_answers": len(right),
            "broken": _complement(_rate([votes[i] for i in right], "right")),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    table = Table(title=f"scenes model, {len(rows)} test questions")
    for column in ("", "n", "answer err", "perception err", "reasoning err"):
        table.add_column(column)
    for name, summary in [("all", result["first_answer"]), *result["by_template"].items()]:
        cells = [summary[k] for k in ("answer_error", "perception_error", "reasoning_error")]
        table.add_row(name, str(summary["n"]), *("-" if c is None else f"{c:.3f}" for c in cells))
    console.print(table)
    console.print(f"crops: {json.dumps(result['crops'])}")
    console.print(f"self-consistency: {json.dumps(result['self_consistency'])}")
    return result


if __name__ == "__main__":
    main()
