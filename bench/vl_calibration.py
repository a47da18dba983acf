"""The paper's table on our model (issue 18, item 3): what training the model to state its confidence buys.

    OMP_NUM_THREADS=1 .venv/bin/python bench/vl_calibration.py [--seeds 0 1 2] [--n 1000] [--work DIR]

For every seed, the reference model is cold-started on the output format (``guardrail.reference.verbalized``:
new tokens, uniform scores) and then trained by GRPO from that same checkpoint three ways: one verbalized score
(Brier against correctness, the RLCR baseline), the decoupled reward without TAR, and the full method (decoupled
reward + TAR). Sharing the cold start makes the variants' comparison paired by seed.

Each model answers the same corrupted *test* questions (greedy); from its own words come accuracy and, for each
confidence, ECE10 and AUROC: overall against answer correctness (the harmonic mean of the two scores; the single
score for the baseline), visual against perception correctness, reasoning against answer correctness. The guard's
inference-time probe is measured on the same questions: on the base model with the shipped artifact, and on the
full method's first seed with an artifact fitted on calibration images GRPO never saw, once without and once with
the verbalized scores (the calibrator's blends).

Differences between training variants are paired by seed; one "exceeds seed noise" when the paired t statistic
exceeds the two-sided 95 % critical value for the number of seeds. Trained models are kept in ``--work`` and
reused. Results go to bench/results/vl_calibration.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _provenance import provenance
from rich.console import Console
from rich.progress import track
from rich.table import Table
from scipy.stats import t as student_t

from guardrail._paths import recorded_command
from guardrail.calibration.collect import ScoredItem, score_items, scored_arrays
from guardrail.calibration.decoupled import VERBALIZED_FEATURES
from guardrail.calibration.metrics import auroc, expected_calibration_error
from guardrail.data.labelled import easyvqa_items
from guardrail.reference.verbalized import (
    VerbalizedConfig,
    artifact_items,
    cold_start_reference,
    grpo_reference,
)
from guardrail.responses import parse_response
from guardrail.training.reward import harmonic_confidence
from guardrail.types import Signals

RESULTS = Path(__file__).parent / "results" / "vl_calibration.json"
VARIANTS: dict[str, tuple[str, bool, str]] = {
    "single": ("single", False, "RL, one confidence (Brier on one verbalized score)"),
    "decoupled": ("decoupled", False, "RL, decoupled reward, no TAR"),
    "full": ("decoupled", True, "RL, decoupled reward + TAR (the full method)"),
}
ROW_LABELS = {"cold": "cold start (format only, uniform scores)", **{k: v[2] for k, v in VARIANTS.items()}}
CONFIDENCE_FIGURES = tuple(
    f"{part}.{metric}" for part in ("overall", "visual", "reasoning") for metric in ("ece10", "auroc")
)


def train_models(work: Path, seeds: Sequence[int], grpo_items: int, threads: int) -> dict[str, Path]:
    """Cold start per seed, then every variant from it; folders already trained are reused."""
    models: dict[str, Path] = {}
    for seed in seeds:
        config = VerbalizedConfig(seed=seed, grpo_items=grpo_items, threads=threads)
        cold = work / f"cold-start-s{seed}"
        if not (cold / "training_config.json").is_file():
            print(f"cold start, seed {seed}", file=sys.stderr)
            cold_start_reference(cold, config)
        models[f"cold-s{seed}"] = cold
        for name, (mode, tar, _) in VARIANTS.items():
            out = work / f"{name}-s{seed}"
            if not (out / "training_config.json").is_file():
                print(f"GRPO {name}, seed {seed}", file=sys.stderr)
                grpo_reference(out, cold, dataclasses.replace(config, mode=mode, tar=tar))
            models[f"{name}-s{seed}"] = out
    return models


def _metrics(confidence: np.ndarray, correct: np.ndarray) -> dict[str, float | None]:
    keep = ~np.isnan(confidence) & ~np.isnan(correct)
    c, y = confidence[keep], correct[keep]
    if len(c) < 10:
        return {"ece10": None, "auroc": None, "n": len(c)}
    ranked = auroc(c, y) if 0 < y.mean() < 1 else None
    return {"ece10": float(expected_calibration_error(c, y, 10)), "auroc": ranked, "n": len(c)}


def verbalized_metrics(rows: Sequence[ScoredItem], single: bool) -> dict[str, Any]:
    """Accuracy and the model's own scores against the truth (scores it did not write count as missing)."""
    columns = scored_arrays(rows)
    answer, perception = columns["answer_correct"], columns["perception_correct"]
    v, r = columns["verbalized_vision"], columns["verbalized_reasoning"]
    written = ~np.isnan(r) if single else ~np.isnan(v) & ~np.isnan(r)
    overall = r if single else np.array([harmonic_confidence(a, b) for a, b in zip(v, r, strict=True)])
    overall = np.where(written, overall, np.nan)
    out: dict[str, Any] = {
        "accuracy": float(np.mean(answer)),
        "perception_accuracy": float(np.nanmean(perception)),
        "scores_written": float(np.mean(written)),
        "overall": _metrics(overall, answer),
    }
    if not single:
        out["visual"] = _metrics(v, perception)
        out["reasoning"] = _metrics(r, answer)
    return out


def probe_metrics(rows: Sequence[ScoredItem], artifact: Any) -> dict[str, Any]:
    """The guard's calibrated confidences (the artifact applied to each row's signals) against the truth."""
    calibrator = artifact.decoupled_calibrator()
    columns = scored_arrays(rows)
    answer, perception = columns["answer_correct"], columns["perception_correct"]
    parts: dict[str, list[float]] = {"overall": [], "visual": [], "reasoning": []}
    for row in rows:
        result = None if row.signals is None else calibrator.calibrate(row.signals)
        for name in parts:
            value = None if result is None else getattr(result, name)
            parts[name].append(np.nan if value is None else float(value))
    arrays = {name: np.array(values) for name, values in parts.items()}
    return {
        "accuracy": float(np.mean(answer)),
        "perception_accuracy": float(np.nanmean(perception)),
        "overall": _metrics(arrays["overall"], answer),
        "visual": _metrics(arrays["visual"], perception),
        "reasoning": _metrics(arrays["reasoning"], answer),
    }


class WordsOnly:
    """An estimator that measures nothing: the model's own scores only (the training variants' rows need no probe)."""

    def estimate(self, backend: Any, request: Any, generation: Any) -> Signals:
        parsed = parse_response(generation.text)
        scores = {"verbalized_vision": parsed.vision_confidence, "verbalized_reasoning": parsed.reasoning_confidence}
        return Signals(features={k: v for k, v in scores.items() if v is not None}, problems=parsed.problems)


def score(model: Path, items: Sequence[Any], estimator: Any, label: str) -> list[ScoredItem]:
    from guardrail.backends.transformers import TransformersBackend

    backend = TransformersBackend.from_pretrained(model)
    return score_items(backend, estimator, track(items, description=label), batch_size=32)


def fit_artifacts(model: Path, n: int, shipped: Any) -> tuple[Any, Any]:
    """Two artifacts for a trained model, from the same calibration rows: the probe alone, probe + verbalized."""
    from guardrail.calibration.artifact import fingerprint_model, save_artifact
    from guardrail.calibration.pipeline import calibrate_rows, items_fingerprint
    from guardrail.pretrained import ARTIFACT_FILENAME, estimator_for

    setting = dict(shipped.info.get("estimator") or {})
    weight = float(setting.get("grounding_weight", 1.0))
    items = artifact_items(n)
    estimator = estimator_for(shipped)  # the shipped probe setting (kind, probability, K); normalisation refitted
    rows = score(model, items, estimator, f"calibration rows ({model.name})")
    verbal_features = set(VERBALIZED_FEATURES.values())
    stripped = [
        dataclasses.replace(
            row,
            signals=None
            if row.signals is None
            else row.signals.model_copy(
                update={"features": {k: v for k, v in row.signals.features.items() if k not in verbal_features}}
            ),
        )
        for row in rows
    ]
    common: dict[str, Any] = {
        "model_fingerprint": fingerprint_model(model),
        "data_fingerprint": items_fingerprint(items),
        "grounding_weight": weight,
        "info": {
            "estimator": setting,
            "data": f"easy-vqa:calibration:not-grpo-half:n={n}:seed=0",
            "command": recorded_command(sys.argv),
        },
    }
    alone, blended = calibrate_rows(stripped, **common), calibrate_rows(rows, **common)
    save_artifact(blended, model / ARTIFACT_FILENAME)  # the trained model's own artifact, shipped with it
    return alone, blended


def paired(a: Sequence[float | None], b: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean and spread of b - a over seeds, and whether it exceeds seed-to-seed noise (paired t, 95 %)."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if len(pairs) < 2:
        return None
    d = np.array([y - x for x, y in pairs])
    sd = float(d.std(ddof=1))
    t = math.inf if sd == 0 and d.mean() != 0 else (0.0 if sd == 0 else float(d.mean() / (sd / math.sqrt(len(d)))))
    critical = float(student_t.ppf(0.975, len(d) - 1))  # two-sided 95 %: 4.303 for 3 seeds
    return {"mean": float(d.mean()), "sd": sd, "t": t, "exceeds_seed_noise": bool(abs(t) > critical)}


def _get(block: dict[str, Any], path: str) -> float | None:
    value: Any = block
    for key in path.split("."):
        value = None if value is None else value.get(key)
    return None if value is None else float(value)


def summarize(per_seed: dict[str, dict[int, dict[str, Any]]], seeds: Sequence[int]) -> dict[str, Any]:
    """Mean and sd over seeds of every figure, and the paired differences between training variants."""
    figures = ["accuracy", "perception_accuracy", *CONFIDENCE_FIGURES]
    summary: dict[str, Any] = {}
    for name, runs in per_seed.items():
        summary[name] = {}
        for figure in figures:
            values = [_get(runs[s], figure) for s in seeds]
            known = [v for v in values if v is not None]
            if known:
                summary[name][figure] = {
                    "mean": float(np.mean(known)),
                    "sd": float(np.std(known, ddof=1)) if len(known) > 1 else None,
                    "per_seed": values,
                }
    comparisons: dict[str, Any] = {}
    for a, b in (
        ("cold", "single"),
        ("cold", "full"),
        ("single", "full"),
        ("decoupled", "full"),
        ("single", "decoupled"),
    ):
        comparisons[f"{b} - {a}"] = {
            figure: paired([_get(per_seed[a][s], figure) for s in seeds], [_get(per_seed[b][s], figure) for s in seeds])
            for figure in figures
        }
    return {"by_row": summary, "paired_differences": comparisons}


def _fmt(block: dict[str, Any], figure: str) -> str:
    value = block.get(figure)
    if value is None:
        return "-"
    if isinstance(value, dict):
        sd = value.get("sd")
        return f"{value['mean']:.3f}" + ("" if sd is None else f" ± {sd:.3f}")
    return f"{value:.3f}"


def run(seeds: Sequence[int], n: int, n_calibration: int, grpo_items: int, work: Path, threads: int) -> dict[str, Any]:
    from guardrail.calibration.artifact import load_artifact
    from guardrail.pretrained import estimator_for, find_artifact
    from guardrail.reference import reference_model_path

    start = time.perf_counter()
    models = train_models(work, seeds, grpo_items, threads)
    trained = time.perf_counter() - start
    items = easyvqa_items("test", limit=n, seed=0)
    base = reference_model_path()
    shipped_path = find_artifact(base)
    if shipped_path is None:
        raise SystemExit(f"{base} has no calibration artifact")
    shipped = load_artifact(shipped_path)

    per_seed: dict[str, dict[int, dict[str, Any]]] = {"cold": {}, **{name: {} for name in VARIANTS}}
    for seed in seeds:
        for name in per_seed:
            rows = score(models[f"{name}-s{seed}"], items, WordsOnly(), f"{name} seed {seed}")
            per_seed[name][seed] = verbalized_metrics(rows, single=name == "single")

    base_rows = score(base, items, estimator_for(shipped), "base model, guard probe")
    probe_alone, probe_verbal = fit_artifacts(models[f"full-s{seeds[0]}"], n_calibration, shipped)
    # Both artifacts come from the same rows and differ only in the verbalized blends, which the estimator does not
    # use: one scoring of the test questions serves both.
    full_rows = score(models[f"full-s{seeds[0]}"], items, estimator_for(probe_verbal), "full method, guard probe")
    guard = {
        "base model, guard probe (shipped artifact)": probe_metrics(base_rows, shipped),
        f"full method seed {seeds[0]}, guard probe alone": probe_metrics(full_rows, probe_alone),
        f"full method seed {seeds[0]}, guard probe + verbalized": probe_metrics(full_rows, probe_verbal),
    }
    base_block = guard["base model, guard probe (shipped artifact)"]
    candidate = guard[f"full method seed {seeds[0]}, guard probe + verbalized"]
    as_accurate = candidate["accuracy"] >= base_block["accuracy"]
    better = (candidate["overall"]["ece10"] or 1.0) < (base_block["overall"]["ece10"] or 1.0)
    return {
        "n": n,
        "seeds": list(seeds),
        "default_decision": {
            "candidate": f"full method seed {seeds[0]} with its artifact (probe + verbalized)",
            "as_accurate": as_accurate,
            "better_calibrated_overall": better,
            "becomes_default": as_accurate and better,
        },
        "grpo_items": grpo_items,
        "n_calibration": n_calibration,
        "row_labels": ROW_LABELS,
        "per_seed": per_seed,
        "summary": summarize(per_seed, seeds),
        "guard": guard,
        "training_config": {k: json.loads((p / "training_config.json").read_text()) for k, p in models.items()},
        "seconds": {"training": round(trained, 1), "total": round(time.perf_counter() - start, 1)},
    }


def show(result: dict[str, Any]) -> None:
    table = Table(title=f"VL-Calibration on the corrupted test split (n = {result['n']}, seeds {result['seeds']})")
    for column in (
        "row",
        "accuracy",
        "overall ECE",
        "overall AUROC",
        "visual ECE",
        "visual AUROC",
        "reasoning ECE",
        "reasoning AUROC",
    ):
        table.add_column(column)
    figures = ["accuracy", *CONFIDENCE_FIGURES]
    for name, block in result["summary"]["by_row"].items():
        table.add_row(ROW_LABELS[name], *(_fmt(block, f) for f in figures))
    for name, block in result["guard"].items():
        table.add_row(name, *(_fmt({f: _get(block, f) for f in figures}, f) for f in figures))
    Console(width=170).print(table)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=1000, help="corrupted test questions")
    parser.add_argument("--n-calibration", type=int, default=1500, help="rows for the trained model's artifact")
    parser.add_argument("--grpo-items", type=int, default=VerbalizedConfig().grpo_items)
    parser.add_argument("--work", type=Path, default=Path("build/vl_calibration"), help="trained models, reused")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) the models and stop")
    args = parser.parse_args(argv)
    if args.train_only:
        train_models(args.work, args.seeds, args.grpo_items, args.threads)
        return {}
    result = run(args.seeds, args.n, args.n_calibration, args.grpo_items, args.work, args.threads)
    result.update(provenance(__file__, list(sys.argv[1:] if argv is None else argv)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    show(result)
    return result


if __name__ == "__main__":
    main()
