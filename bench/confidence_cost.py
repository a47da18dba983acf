"""Benchmark: what decoupled confidence adds to a model call's latency (issues 4 and 17), on the CPU.

    OMP_NUM_THREADS=1 .venv/bin/python bench/confidence_cost.py [--model DIR] [--items 32] [--rounds 5] [--threads 1]

Four variants answer the same real easy-VQA test questions (``easyvqa_items("test", limit=N, seed=0)``, images
corrupted as in calibration) through ``TransformersBackend`` on the CPU:

- ``generate``: ``backend.generate(request)`` alone (greedy, the model's own answer length). The backend keeps
  row 0 of the scoring pass while generating (its own prefill pass, then generation from its KV cache);
- ``K=1``: the same ``generate`` followed by ``DecoupledEstimator(draws=1).estimate(backend, request, generation)``
  (span parsing, token offsets, one patch-blackened copy of the image, one teacher-forced forward pass over the
  copy alone, row 0 taken from what generation kept, the reductions);
- ``K=4``: likewise with ``DecoupledEstimator(draws=4)`` (4 copies in one forward pass);
- ``generate, nothing kept``: ``generate`` on a backend over the same model with ``keep_references=0``, i.e.
  ``model.generate`` alone, as before generation kept row 0: what keeping costs generation itself;
- ``S=2``, ``S=4``, ``S=8`` (issue 28): the shipped probe (one whole-image blackout) with the stability probe's
  K geometric views scored in the same pass (1 + K rows through the model); ``S=0`` is that probe alone.

The variants are interleaved: for each round and each item the four run back to back, in an order rotated from
item to item, so that slow phases of this shared machine hit them alike. Each call is timed with the wall clock
(``perf_counter``) and with the process CPU clock (all threads), split into its generate and estimate parts;
inside the estimate, the backend's ``score`` call (encoding the rows, the forward pass, the reductions) is
timed too (``score_median_s``; the rest is parsing, token offsets, image decoding and perturbation), and the rows
it ran through the model are counted (``score_rows_median``: K when row 0 came from generation, K + 1 when not).
The ratio of a variant is taken per (round, item) pair against the ``generate`` call of the same pair, and the
median of those paired ratios is reported (the ratio of the median seconds is kept beside it);
``ratio_vs_generate_alone`` pairs every variant with ``generate, nothing kept`` instead.

Goal (issue 17): K = 1 <= 1.15x generate alone on the CPU. Default model: the shipped reference model;
``--model DIR`` for any other model folder. Results go to bench/results/confidence_cost.json (``--out`` for
another path) with the commit and the exact command that produced them.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from _provenance import provenance, relative
from PIL import Image

from guardrail import Request
from guardrail.backends import ReferenceScores, TeacherForcedScores
from guardrail.backends.transformers import TransformersBackend
from guardrail.confidence import DecoupledEstimator
from guardrail.confidence.stability import StabilitySetting
from guardrail.data.labelled import easyvqa_items
from guardrail.reference import reference_model_path

RESULTS = Path(__file__).parent / "results" / "confidence_cost.json"
GOAL_K1 = 1.15
ALONE = "generate, nothing kept"
STABILITY_COUNTS: tuple[int, ...] = (0, 2, 4, 8)
VARIANTS: tuple[str, ...] = ("generate", "K=1", "K=4", ALONE, *(f"S={k}" for k in STABILITY_COUNTS))
DRAWS: dict[str, int] = {"K=1": 1, "K=4": 4}


def _estimators() -> dict[str, DecoupledEstimator]:
    """Every timed estimator by label: the paper's probe with K draws, and the shipped probe with S stability
    views (geometric, as the shipped artifact chose)."""
    out = {label: DecoupledEstimator(draws=k) for label, k in DRAWS.items()}
    for count in STABILITY_COUNTS:
        out[f"S={count}"] = DecoupledEstimator(
            perturbation="blackout",
            blackout_probability=1.0,
            stability=StabilitySetting(family="geometric", count=count),
        )
    return out


@dataclass
class Timings:
    """Seconds of every timed call of one variant, in call order (wall clock and process CPU clock)."""

    total: list[float] = field(default_factory=list)
    generate: list[float] = field(default_factory=list)
    estimate: list[float] = field(default_factory=list)
    cpu_total: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    score_rows: list[float] = field(default_factory=list)


class TimedScoringBackend(TransformersBackend):
    """``TransformersBackend`` whose ``score`` calls record their wall seconds in ``score_seconds`` and the rows
    they ran through the model in ``score_rows``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.score_seconds: list[float] = []
        self.score_rows: list[int] = []

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
        reference: ReferenceScores | None = None,
    ) -> TeacherForcedScores:
        start = time.perf_counter()
        try:
            return super().score(request, token_ids, variants, distributions=distributions, reference=reference)
        finally:
            self.score_seconds.append(time.perf_counter() - start)
            self.score_rows.append(len(variants) + (reference is None))


def _timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def _weights_digest(model_dir: Path) -> str | None:
    """SHA-256 of the model's ``*.safetensors`` files (which weights were measured), ``None`` without any."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the reference model)")
    parser.add_argument("--items", type=int, default=32, help="easy-VQA test questions (default 32)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the items (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer limit (default: the model's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.items < 1 or args.rounds < 1 or args.threads < 1:
        parser.error("--items, --rounds and --threads must be >= 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure and return the summary (see the module docstring); writes nothing."""
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model) if args.model is not None else reference_model_path()
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"no model folder at {model_dir} (train the reference model first, or pass --model DIR)")
    backend = TimedScoringBackend.from_pretrained(model_dir, device="cpu", max_new_tokens=args.max_new_tokens)
    assert isinstance(backend, TimedScoringBackend)
    alone = TransformersBackend(
        backend.model, backend.processor, device="cpu", max_new_tokens=args.max_new_tokens, keep_references=0
    )
    estimators = _estimators()
    items = easyvqa_items("test", limit=args.items, seed=0)
    requests = [item.request for item in items]

    # Warm-up (first calls allocate and compile): one of each variant, not timed.
    warm = backend.generate(requests[0])
    for estimator in estimators.values():
        estimator.estimate(backend, requests[0], warm)
    alone.generate(requests[0])

    timings = {label: Timings() for label in VARIANTS}
    answer_tokens: list[int] = []
    paired: dict[str, list[float]] = {label: [] for label in estimators}
    paired_cpu: dict[str, list[float]] = {label: [] for label in estimators}
    paired_alone: dict[str, list[float]] = {label: [] for label in VARIANTS if label != ALONE}
    for round_index in range(args.rounds):
        for index, request in enumerate(requests):
            shift = (round_index + index) % len(VARIANTS)
            order = VARIANTS[shift:] + VARIANTS[:shift]
            walls: dict[str, float] = {}
            cpus: dict[str, float] = {}
            for label in order:
                generator = alone if label == ALONE else backend
                generation, gen_wall, gen_cpu = _timed(functools.partial(generator.generate, request))
                est_wall = est_cpu = 0.0
                if label in estimators:
                    estimator = estimators[label]
                    _, est_wall, est_cpu = _timed(functools.partial(estimator.estimate, backend, request, generation))
                    timings[label].score.append(backend.score_seconds[-1])
                    timings[label].score_rows.append(backend.score_rows[-1])
                elif label == "generate":
                    answer_tokens.append(len(generation.token_ids))
                record = timings[label]
                record.generate.append(gen_wall)
                record.estimate.append(est_wall)
                record.total.append(gen_wall + est_wall)
                record.cpu_total.append(gen_cpu + est_cpu)
                walls[label], cpus[label] = gen_wall + est_wall, gen_cpu + est_cpu
            for label in estimators:
                paired[label].append(walls[label] / walls["generate"])
                paired_cpu[label].append(cpus[label] / cpus["generate"])
            for label in paired_alone:
                paired_alone[label].append(walls[label] / walls[ALONE])
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    per_variant = {
        label: {
            "median_s": _median(t.total),
            "generate_median_s": _median(t.generate),
            "estimate_median_s": _median(t.estimate),
            "score_median_s": _median(t.score) if t.score else 0.0,
            "score_rows_median": _median(t.score_rows) if t.score_rows else 0.0,
            "cpu_median_s": _median(t.cpu_total),
            "calls": len(t.total),
        }
        for label, t in timings.items()
    }
    base = per_variant["generate"]["median_s"]
    ratio = {label: _median(values) for label, values in paired.items()}
    return {
        "benchmark": "generate + decoupled confidence vs generate alone (TransformersBackend, CPU)",
        **provenance(__file__, args.argv),
        "model": "reference model" if args.model is None else relative(backend.name),
        "model_path": relative(model_dir),
        "model_weights_sha256": _weights_digest(model_dir),
        "model_parameters": sum(p.numel() for p in backend.model.parameters()),
        "device": "cpu",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_1m_5m_15m": list(os.getloadavg()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "items": len(requests),
        "rounds": args.rounds,
        "answer_tokens_median": _median([float(n) for n in answer_tokens]),
        "variants": per_variant,
        "ratio": ratio,
        "ratio_cpu": {label: _median(values) for label, values in paired_cpu.items()},
        "ratio_of_medians": {label: per_variant[label]["median_s"] / base for label in estimators},
        "ratio_vs_generate_alone": {label: _median(values) for label, values in paired_alone.items()},
        "goal_k1": GOAL_K1,
        "goal_met": ratio["K=1"] <= GOAL_K1,
    }


def report(summary: dict[str, Any], out: Path) -> None:
    """Print the summary as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Confidence cost on {summary['model']} (CPU, {summary['threads']} thread(s)), medians")
    for column in ("variant", "total s", "generate s", "estimate s", "of which score s", "ratio", "ratio CPU"):
        table.add_column(column, justify="left" if column == "variant" else "right")

    def ratio(kind: str, label: str) -> str:
        return f"{summary[kind][label]:.3f}" if label in summary[kind] else "1.00" if label == "generate" else ""

    for label, values in summary["variants"].items():
        paired, cpu = ratio("ratio", label), ratio("ratio_cpu", label)
        table.add_row(
            label,
            f"{values['median_s']:.4f}",
            f"{values['generate_median_s']:.4f}",
            f"{values['estimate_median_s']:.4f}",
            f"{values['score_median_s']:.4f}",
            paired,
            cpu,
        )
    console = Console()
    console.print(table)
    verdict = "met" if summary["goal_met"] else "MISSED"
    console.print(
        f"K=1 costs {summary['ratio']['K=1']:.3f}x generate alone (goal <= {summary['goal_k1']}: {verdict}); "
        f"{summary['items']} items x {summary['rounds']} rounds, median answer "
        f"{summary['answer_tokens_median']:g} tokens; load average {summary['load_average_1m_5m_15m'][0]:.1f}. "
        f"Against generate with nothing kept (model.generate alone): generate "
        f"{summary['ratio_vs_generate_alone']['generate']:.3f}x, K=1 {summary['ratio_vs_generate_alone']['K=1']:.3f}x. "
        f"Written to {out}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON, print the table; returns the summary."""
    args = parse_args(argv)
    summary = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    report(summary, out)
    return summary


if __name__ == "__main__":
    main()
