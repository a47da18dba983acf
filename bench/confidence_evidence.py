"""Evidence that the decoupled confidence measures what it claims (issue 4, item 5).

    .venv/bin/python bench/confidence_evidence.py [--model DIR] [--n 1500] [--black 150]

On easy-VQA's test split under graded corruptions (seeded), with the model's own answers:
- AUROC of the visual component for *perception correctness*, against a single holistic score (mean
  answer-token probability) for the same target: the visual signal should rank perception errors better;
- AUROC of the reasoning component for *reasoning correctness given correct perception*;
- the visual component on clean images against the same questions with the image blacked out entirely.
AUROC is unchanged by any monotone calibration, so raw scores are ranked. Results go to
bench/results/confidence_evidence.json.

When the model folder has a calibration artifact, the same scored rows also check the calibration targets
(issue 5): overall ECE10 against answer correctness (and the ECE noise floor at this n), visual ECE10 against
perception correctness, and whether the certified alpha = 0.05 threshold holds on the test split. Those go to
bench/results/calibration_targets.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _provenance import provenance, relative
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from guardrail.calibration.collect import remeasure, score_items, scored_arrays
from guardrail.calibration.metrics import auroc
from guardrail.calibration.perturbation_choice import CANDIDATES, GROUNDING_WEIGHTS, ProbeSetting, reweigh
from guardrail.data.labelled import LabelledItem, easyvqa_items
from guardrail.pretrained import default_model_path, estimator_for, find_artifact
from guardrail.types import Request

RESULTS = Path(__file__).parent / "results" / "confidence_evidence.json"
TARGETS = Path(__file__).parent / "results" / "calibration_targets.json"


def calibration_targets(rows: Sequence[Any], artifact: Any, targets: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """The shipped calibration applied to held-out test rows: ECE against the noise floor, certified thresholds."""
    from guardrail.calibration.metrics import expected_calibration_error
    from guardrail.calibration.summary import ece_noise_floor

    calibrator = artifact.decoupled_calibrator()
    scored = [(r, calibrator.calibrate(r.signals)) for r in rows if r.signals is not None]
    out: dict[str, Any] = {"n": len(scored)}
    for component, label in (("overall", "answer_correct"), ("visual", "perception_correct")):
        pairs = [(getattr(c, component), getattr(r, label)) for r, c in scored]
        pairs = [(p, float(y)) for p, y in pairs if p is not None and y is not None]
        c = np.array([p for p, _ in pairs])
        y = np.array([y for _, y in pairs])
        floor = ece_noise_floor(c, n_bins=10, n_draws=500)
        out[component] = {
            "n": len(pairs),
            "ece_10": float(expected_calibration_error(c, y, n_bins=10)),
            "noise_floor_mean": float(floor.mean),
            "noise_floor_high": float(floor.high),
            "mean_confidence": float(c.mean()),
            "accuracy": float(y.mean()),
        }
    certified = []
    for component in ("overall", "visual"):
        label = "answer_correct" if component == "overall" else "perception_correct"
        for alpha, delta in targets:
            rule = artifact.certified(component, max_error=alpha, delta=delta)
            if rule is None:
                continue
            entry: dict[str, Any] = {"component": component, "alpha": alpha, "delta": delta,
                                     "feasible": rule.feasible, "threshold": rule.threshold}  # fmt: skip
            if rule.feasible and rule.threshold is not None:
                accepted = [float(getattr(r, label)) for r, c in scored
                            if getattr(c, component) is not None and getattr(c, component) >= rule.threshold
                            and getattr(r, label) is not None]  # fmt: skip
                entry["test_coverage"] = len(accepted) / max(len(scored), 1)
                entry["test_error"] = None if not accepted else 1.0 - float(np.mean(accepted))
                entry["holds"] = entry["test_error"] is not None and entry["test_error"] <= alpha
            else:
                entry["reason"] = rule.reason
            certified.append(entry)
    out["certified"] = certified
    return out


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

    artifact_path = find_artifact(model_dir)
    artifact = None if artifact_path is None else load_artifact(artifact_path)
    backend = TransformersBackend.from_pretrained(model_dir)
    estimator = estimator_for(artifact)  # the probe and normalisation the artifact was fitted under

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

    # every candidate probe on the same test answers (the choice was made on the calibration split); the probe in
    # use was measured above already
    plain = ProbeSetting(
        perturbation=estimator.perturbation,
        blackout_probability=estimator.blackout_probability,
        grounding_weight=estimator.normalization.grounding_weight,
    )
    used = plain.with_stability(estimator.stability, estimator.normalization.stability_weight)
    probes = {}  # the visual probe alone (no stability probe): s from the measured KL and H
    for setting in CANDIDATES:
        measured = rows if setting == plain.weighted(1.0) else remeasure(backend, setting.estimator(), rows)
        for weight in GROUNDING_WEIGHTS:  # the same KL and H, weighed otherwise
            probes[setting.weighted(weight).label] = _auroc(
                scored_arrays(reweigh(measured, weight))["visual"], perception
            )

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
        "model": relative(model_dir),
        "calibrated_with": None if artifact_path is None else relative(artifact_path),
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
        "probe": {
            "used": used.as_info(),
            "chosen_on_calibration": None if artifact is None else artifact.info.get("perturbation_choice"),
            "test_auroc_perception_by_candidate": probes,
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
        "calibration_targets": None
        if artifact is None
        else calibration_targets(rows, artifact, ((0.05, 0.1), (0.1, 0.1), (0.2, 0.1))),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--n", type=int, default=1500, help="corrupted test questions")
    parser.add_argument("--black", type=int, default=150, help="clean questions asked again on a black image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--targets-out", type=Path, default=TARGETS)
    args = parser.parse_args(argv)
    origin = provenance(__file__, list(sys.argv[1:] if argv is None else argv))
    results = {**origin, **run(args.model or default_model_path(), args.n, args.black, args.seed)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    targets = results.pop("calibration_targets")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if targets is not None:
        targets = {**origin, "model": results["model"], "artifact": results["calibrated_with"], **targets}
        args.targets_out.write_text(json.dumps(targets, indent=2) + "\n")

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
    probe = results["probe"]
    console.print(
        "visual probe AUROC (perception) on this test split: "
        + ", ".join(f"{k} {v:.3f}" for k, v in probe["test_auroc_perception_by_candidate"].items() if v is not None)
    )
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
    if targets is not None:
        for component in ("overall", "visual"):
            t = targets[component]
            console.print(
                f"{component}: ECE10 {t['ece_10']:.3f} (noise floor {t['noise_floor_mean']:.3f}, 95% <= "
                f"{t['noise_floor_high']:.3f}), mean confidence {t['mean_confidence']:.3f}, "
                f"accuracy {t['accuracy']:.3f}"
            )
        for entry in targets["certified"]:
            if entry["feasible"]:
                console.print(
                    f"certified {entry['component']} alpha={entry['alpha']}: threshold {entry['threshold']:.3f}, "
                    f"test coverage {entry['test_coverage']:.1%}, test error {entry['test_error']}, "
                    f"holds={entry['holds']}"
                )
            else:
                console.print(f"certified {entry['component']} alpha={entry['alpha']}: infeasible ({entry['reason']})")
        console.print(f"written to {args.targets_out}")
    console.print(f"written to {args.out}")
    results["calibration_targets"] = targets
    return results


if __name__ == "__main__":
    main()
