"""Evidence that the decoupled confidence measures what it claims (issue 4, item 5).

    .venv/bin/python bench/confidence_evidence.py [--model DIR] [--n 1500] [--black 150]

On easy-VQA's test split under graded corruptions (seeded), with the model's own answers:
- AUROC of the visual component for *perception correctness*, against a single holistic score (mean
  answer-token probability) for the same target: the visual signal should rank perception errors better;
- AUROC of the reasoning component for *reasoning correctness given correct perception*;
- the visual component on clean images against the same questions with the image blacked out entirely.
AUROC is unchanged by any monotone calibration, so raw scores are ranked. Results go to
bench/results/confidence_evidence.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from guardrail.calibration.collect import score_items, scored_arrays
from guardrail.calibration.metrics import auroc
from guardrail.data.labelled import LabelledItem, easyvqa_items
from guardrail.pretrained import default_model_path, find_artifact
from guardrail.types import Request

RESULTS = Path(__file__).parent / "results" / "confidence_evidence.json"


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    keep = ~np.isnan(scores) & ~np.isnan(labels)
    if keep.sum() < 2 or len(set(labels[keep].tolist())) < 2:
        return None
    return float(auroc(scores[keep], labels[keep]))


def _blacked(items: Sequence[LabelledItem]) -> list[LabelledItem]:
    out = []
    for item in items:
        image = Image.new("RGB", (64, 64), (0, 0, 0))
        out.append(LabelledItem(request=Request.from_question(item.request.question, [image]), answer=item.answer))
    return out


def run(model_dir: Path, n: int, n_black: int, seed: int) -> dict[str, Any]:
    from guardrail.backends.transformers import TransformersBackend
    from guardrail.calibration.artifact import load_artifact
    from guardrail.confidence.estimator import DecoupledEstimator

    artifact_path = find_artifact(model_dir)
    artifact = None if artifact_path is None else load_artifact(artifact_path)
    normalization = None if artifact is None else artifact.visual_normalization
    backend = TransformersBackend.from_pretrained(model_dir)
    estimator = DecoupledEstimator(normalization=normalization)

    items = easyvqa_items("test", limit=n, seed=seed)
    start = time.perf_counter()
    rows = score_items(backend, estimator, track(items, description="corrupted test split"))
    columns = scored_arrays(rows)
    perception, answer = columns["perception_correct"], columns["answer_correct"]
    reasoning_rows = perception == 1.0

    clean = easyvqa_items("test", limit=n_black, seed=seed + 1, corruptions=())
    clean_rows = score_items(backend, estimator, track(clean, description="clean images"))
    black_rows = score_items(backend, estimator, track(_blacked(clean), description="blacked-out images"))
    clean_visual = scored_arrays(clean_rows)["visual"]
    black_visual = scored_arrays(black_rows)["visual"]
    calibrated: dict[str, float] = {}
    if artifact is not None:
        calibrator = artifact.decoupled_calibrator()
        for name, group in (("clean", clean_rows), ("black", black_rows)):
            values = [calibrator.calibrate(r.signals).visual for r in group if r.signals is not None]
            calibrated[name] = float(np.nanmean([np.nan if v is None else v for v in values]))

    severities = np.array([int(r.item.tags["severity"]) for r in rows])
    by_severity = {
        str(s): {
            "n": int((severities == s).sum()),
            "perception_accuracy": float(np.nanmean(perception[severities == s])),
            "answer_accuracy": float(np.mean(answer[severities == s])),
        }
        for s in sorted(set(severities.tolist()))
    }
    return {
        "model": str(model_dir),
        "calibrated_with": None if artifact_path is None else str(artifact_path),
        "n": len(rows),
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "perception_accuracy": float(np.nanmean(perception)),
        "answer_accuracy": float(np.mean(answer)),
        "by_severity": by_severity,
        "auroc_perception": {
            "visual": _auroc(columns["visual"], perception),
            "holistic_mean_answer_token_prob": _auroc(columns["holistic"], perception),
            "reasoning": _auroc(columns["reasoning"], perception),
        },
        "auroc_reasoning_given_correct_perception": {
            "n": int(reasoning_rows.sum()),
            "reasoning_errors": int((answer[reasoning_rows] == 0).sum()),
            "reasoning": _auroc(columns["reasoning"][reasoning_rows], answer[reasoning_rows]),
            "holistic_mean_answer_token_prob": _auroc(columns["holistic"][reasoning_rows], answer[reasoning_rows]),
        },
        "auroc_answer": {
            "visual": _auroc(columns["visual"], answer),
            "reasoning": _auroc(columns["reasoning"], answer),
            "holistic_mean_answer_token_prob": _auroc(columns["holistic"], answer),
        },
        "blackout": {
            "n": len(clean_rows),
            "visual_raw_clean_mean": float(np.nanmean(clean_visual)),
            "visual_raw_black_mean": float(np.nanmean(black_visual)),
            "visual_calibrated_clean_mean": calibrated.get("clean"),
            "visual_calibrated_black_mean": calibrated.get("black"),
        },
        "errors": sum(r.error is not None for r in rows),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--n", type=int, default=1500, help="corrupted test questions")
    parser.add_argument("--black", type=int, default=150, help="clean questions asked again on a black image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = run(args.model or default_model_path(), args.n, args.black, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    table = Table(title=f"Decoupled confidence evidence (n={results['n']}, corrupted easy-VQA test)")
    table.add_column("target")
    table.add_column("score")
    table.add_column("AUROC", justify="right")
    for target, key in (("perception correct", "auroc_perception"),
                        ("reasoning correct | perception", "auroc_reasoning_given_correct_perception"),
                        ("answer correct", "auroc_answer")):  # fmt: skip
        for score, value in results[key].items():
            if isinstance(value, float):
                table.add_row(target, score, f"{value:.3f}")
    console = Console()
    console.print(table)
    black = results["blackout"]
    console.print(
        f"visual on clean vs black images: raw {black['visual_raw_clean_mean']:.3f} vs "
        f"{black['visual_raw_black_mean']:.3f}"
        + (
            f"; calibrated {black['visual_calibrated_clean_mean']:.3f} vs {black['visual_calibrated_black_mean']:.3f}"
            if black["visual_calibrated_clean_mean"] is not None
            else ""
        )
    )
    console.print(f"written to {args.out}")
    return results


if __name__ == "__main__":
    main()
