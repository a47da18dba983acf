"""Training that ranks (issue 30): what each fix of the collapse adds to the model's stated confidence.

    OMP_NUM_THREADS=1 .venv/bin/python bench/vl_calibration.py [--seeds 0 1 2] [--n 1000] [--jobs 3] [--work DIR]

The reference model is cold-started once on the output format (``guardrail.reference.verbalized``: new tokens,
uniform scores; ``--cold-start-seed``, shared by every seed so that the rows differ only in their GRPO) and then
trained by GRPO from that checkpoint, per seed, once per row of ``VARIANTS``: METHOD.md section 8 as written
(decoupled reward with the batch-z-scored visual target, TAR), the absolute visual target (the shipped artifact's
calibrated visual confidence), that target plus each of issue 30's switches on its own (own advantage for the
confidence tokens, within-group ranking, clean/corrupted pairs), and all of them. ``--jobs`` seeds train and score
in parallel processes.

Each model answers the same corrupted *test* questions (greedy); from its own words come accuracy and, for each
confidence, ECE10 and AUROC: overall against answer correctness (the harmonic mean of the two scores), visual
against perception correctness, reasoning against answer correctness, and the spread (std) of the stated overall
scores. From training come the last logged spread and share at the ceiling and the steps where the collapse alarm
fired. The guard's inference-time probe is measured on the same questions: on the base model with the shipped
artifact, and on the ``all`` row's first seed with an artifact fitted on calibration images GRPO never saw, once
without and once with the verbalized scores (the calibrator's blends); that candidate decides the default.

No choice was made on the test questions: the GRPO data is one half of the calibration images, the trained model's
artifact the other half. Differences between rows are paired by seed; one "exceeds seed noise" when the paired t
statistic exceeds the two-sided 95 % critical value for the number of seeds. Trained models are kept in ``--work``
and reused. Results go to bench/results/vl_calibration.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
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
    ColdStartConfig,
    VerbalizedConfig,
    artifact_items,
    cold_start_reference,
    grpo_reference,
)
from guardrail.responses import parse_response
from guardrail.training.reward import harmonic_confidence
from guardrail.types import Signals

RESULTS = Path(__file__).parent / "results" / "vl_calibration.json"
GUARD: dict[str, Any] = {"visual_target": "guard"}
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "section8": ({}, "METHOD.md section 8 as written (batch-z visual target, TAR)"),
    "guard_target": (GUARD, "absolute visual target (the guard's calibrated visual confidence)"),
    "own_advantage": ({**GUARD, "own_advantage": True}, "absolute target + own advantage for confidence tokens"),
    "ranking": ({**GUARD, "ranking": True}, "absolute target + within-group ranking"),
    "pairs": ({**GUARD, "pairs": True}, "absolute target + clean/corrupted pairs"),
    "all": (
        {**GUARD, "own_advantage": True, "ranking": True, "pairs": True},
        "all of them (absolute target, own advantage, ranking, pairs)",
    ),
}
ROW_LABELS = {k: v[1] for k, v in VARIANTS.items()}
CONFIDENCE_FIGURES = tuple(
    f"{part}.{metric}" for part in ("overall", "visual", "reasoning") for metric in ("ece10", "auroc")
)
SPREAD_FIGURES = ("stated_std", "training.stated_std", "training.ceiling_share")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every trained row shares: the cold start and GRPO's size."""

    grpo_items: int
    max_steps: int | None
    learning_rate: float | None
    cold_start_examples: int
    cold_start_seed: int
    threads: int

    def config(self, seed: int) -> VerbalizedConfig:
        grpo: dict[str, Any] = {}
        if self.max_steps is not None:
            grpo["max_steps"] = self.max_steps
        if self.learning_rate is not None:
            grpo["learning_rate"] = self.learning_rate
        cold = ColdStartConfig(examples=self.cold_start_examples)
        return VerbalizedConfig(seed=seed, grpo_items=self.grpo_items, threads=self.threads, cold_start=cold, grpo=grpo)


def cold_model(work: Path, setup: Setup) -> Path:
    """The shared cold start (trained once, reused)."""
    cold = work / f"cold-start-s{setup.cold_start_seed}"
    if not (cold / "training_config.json").is_file():
        print(f"cold start, seed {setup.cold_start_seed}", file=sys.stderr)
        cold_start_reference(cold, setup.config(setup.cold_start_seed))
    return cold


def train_seed(work: Path, seed: int, setup: Setup) -> dict[str, Path]:
    """Every row's GRPO for one seed from the shared cold start; folders already trained are reused."""
    cold = cold_model(work, setup)
    models: dict[str, Path] = {}
    for name, (switches, _) in VARIANTS.items():
        out = work / f"{name}-s{seed}"
        if not (out / "training_config.json").is_file():
            print(f"GRPO {name}, seed {seed}", file=sys.stderr)
            grpo_reference(out, cold, dataclasses.replace(setup.config(seed), **switches))
        models[f"{name}-s{seed}"] = out
    return models


def training_spread(model: Path) -> dict[str, Any]:
    """The last logged spread of stated confidences and share at the ceiling, and where the alarm fired."""
    record = json.loads((model / "training_config.json").read_text(encoding="utf-8"))
    logged = [h for h in record.get("log", []) if h.get("confidence/stated_std") is not None]
    last = logged[-1] if logged else {}
    return {
        "stated_std": last.get("confidence/stated_std"),
        "ceiling_share": last.get("confidence/ceiling_share"),
        "alarm_fired_at_steps": (record.get("collapse_alarm") or {}).get("fired_at_steps"),
        "steps": record.get("grpo_steps"),
        "seconds": record.get("seconds"),
    }


def seed_metrics(work: Path, seed: int, setup: Setup, n: int) -> dict[str, Any]:
    """Train (or reuse) one seed's rows and score them on the test questions; kept in ``work`` as JSON."""
    path = work / f"metrics-s{seed}-n{n}.json"
    if path.is_file():
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    models = train_seed(work, seed, setup)
    items = easyvqa_items("test", limit=n, seed=0)
    out: dict[str, Any] = {}
    for name in VARIANTS:
        model = models[f"{name}-s{seed}"]
        rows = score(model, items, WordsOnly(), f"{name} seed {seed}")
        out[name] = {**verbalized_metrics(rows, single=False), "training": training_spread(model)}
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


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
    stated = overall[~np.isnan(overall)]
    out: dict[str, Any] = {
        "accuracy": float(np.mean(answer)),
        "perception_accuracy": float(np.nanmean(perception)),
        "scores_written": float(np.mean(written)),
        "stated_std": float(np.std(stated)) if stated.size else None,
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
    items = artifact_items(n)  # the calibration images GRPO never saw
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
    figures = ["accuracy", "perception_accuracy", *CONFIDENCE_FIGURES, *SPREAD_FIGURES]
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
    pairs = [
        ("section8", "guard_target"),
        *(("guard_target", b) for b in VARIANTS if b not in ("section8", "guard_target")),
    ]
    for a, b in [*pairs, ("section8", "all")]:
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


def run(seeds: Sequence[int], n: int, n_calibration: int, setup: Setup, work: Path, jobs: int) -> dict[str, Any]:
    from guardrail.calibration.artifact import load_artifact
    from guardrail.pretrained import estimator_for, find_artifact
    from guardrail.reference import reference_model_path

    start = time.perf_counter()
    cold_model(work, setup)
    per_seed_raw = train_in_parallel(work, seeds, setup, n, jobs)
    trained = time.perf_counter() - start
    items = easyvqa_items("test", limit=n, seed=0)
    base = reference_model_path()
    shipped_path = find_artifact(base)
    if shipped_path is None:
        raise SystemExit(f"{base} has no calibration artifact")
    shipped = load_artifact(shipped_path)

    per_seed: dict[str, dict[int, dict[str, Any]]] = {
        name: {s: per_seed_raw[s][name] for s in seeds} for name in VARIANTS
    }
    candidate_model = work / f"all-s{seeds[0]}"
    base_rows = score(base, items, estimator_for(shipped), "base model, guard probe")
    probe_alone, probe_verbal = fit_artifacts(candidate_model, n_calibration, shipped)
    # Both artifacts come from the same rows and differ only in the verbalized blends, which the estimator does not
    # use: one scoring of the test questions serves both.
    cand_rows = score(candidate_model, items, estimator_for(probe_verbal), "all switches, guard probe")
    base_name = "base model, guard probe (shipped artifact)"
    alone_name = f"all switches seed {seeds[0]}, guard probe alone"
    verbal_name = f"all switches seed {seeds[0]}, guard probe + verbalized"
    guard = {
        base_name: probe_metrics(base_rows, shipped),
        alone_name: probe_metrics(cand_rows, probe_alone),
        verbal_name: probe_metrics(cand_rows, probe_verbal),
    }
    base_block, candidate = guard[base_name], guard[verbal_name]
    as_accurate = candidate["accuracy"] >= base_block["accuracy"]
    better = (candidate["overall"]["ece10"] or 1.0) < (base_block["overall"]["ece10"] or 1.0)
    return {
        "n": n,
        "seeds": list(seeds),
        "default_decision": {
            "candidate": verbal_name,
            "as_accurate": as_accurate,
            "better_calibrated_overall": better,
            "becomes_default": as_accurate and better,
        },
        "setup": dataclasses.asdict(setup),
        "n_calibration": n_calibration,
        "row_labels": ROW_LABELS,
        "per_seed": per_seed,
        "summary": summarize(per_seed, seeds),
        "guard": guard,
        "training_config": {
            p.name: json.loads((p / "training_config.json").read_text())
            for p in [
                work / f"cold-start-s{setup.cold_start_seed}",
                *(work / f"{v}-s{s}" for s in seeds for v in VARIANTS),
            ]
        },
        "seconds": {"training_and_scoring_rows": round(trained, 1), "total": round(time.perf_counter() - start, 1)},
    }


def _setup_args(setup: Setup) -> list[str]:
    args = [
        "--grpo-items", str(setup.grpo_items),
        "--cold-start-examples", str(setup.cold_start_examples),
        "--cold-start-seed", str(setup.cold_start_seed),
        "--threads", str(setup.threads),
    ]  # fmt: skip
    if setup.max_steps is not None:
        args += ["--max-steps", str(setup.max_steps)]
    if setup.learning_rate is not None:
        args += ["--learning-rate", str(setup.learning_rate)]
    return args


def train_in_parallel(work: Path, seeds: Sequence[int], setup: Setup, n: int, jobs: int) -> dict[int, dict[str, Any]]:
    """Every seed's rows, ``jobs`` seeds at a time in child processes of this script (``--seed-worker``)."""
    if jobs <= 1:
        return {seed: seed_metrics(work, seed, setup, n) for seed in seeds}
    pending = list(seeds)
    running: list[tuple[int, subprocess.Popen[bytes]]] = []
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            command = [sys.executable, __file__, "--seed-worker", str(seed), "--n", str(n), "--work", str(work)]
            running.append((seed, subprocess.Popen([*command, *_setup_args(setup)])))
        seed, process = running.pop(0)
        if process.wait() != 0:
            raise SystemExit(f"seed {seed}: the worker failed with exit code {process.returncode}")
    return {seed: seed_metrics(work, seed, setup, n) for seed in seeds}


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
        "stated std (test)",
        "stated std (train)",
        "at ceiling (train)",
    ):
        table.add_column(column)
    figures = ["accuracy", *CONFIDENCE_FIGURES, *SPREAD_FIGURES]
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
    parser.add_argument("--max-steps", type=int, default=None, help="GRPO steps per row (default: one pass)")
    parser.add_argument("--learning-rate", type=float, default=None, help="GRPO learning rate (default 1e-4)")
    parser.add_argument("--cold-start-examples", type=int, default=ColdStartConfig().examples)
    parser.add_argument("--cold-start-seed", type=int, default=0, help="the one cold start every seed shares")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained and scored in parallel processes")
    parser.add_argument("--work", type=Path, default=Path("build/vl_calibration"), help="trained models, reused")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) the models and stop")
    parser.add_argument("--seed-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup = Setup(
        grpo_items=args.grpo_items,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        cold_start_examples=args.cold_start_examples,
        cold_start_seed=args.cold_start_seed,
        threads=args.threads,
    )
    args.work.mkdir(parents=True, exist_ok=True)
    if args.seed_worker is not None:
        seed_metrics(args.work, args.seed_worker, setup, args.n)
        return {}
    if args.train_only:
        for seed in args.seeds:
            train_seed(args.work, seed, setup)
        return {}
    result = run(args.seeds, args.n, args.n_calibration, setup, args.work, args.jobs)
    result.update(provenance(__file__, list(sys.argv[1:] if argv is None else argv)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    show(result)
    return result


if __name__ == "__main__":
    main()
