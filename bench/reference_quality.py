"""Quality, speed and memory of the shipped reference model on easy-VQA (issue 3, items 4 and 5).

Writes ``bench/results/reference_quality.json`` and prints a table. The model is loaded the generic way
(``AutoModelForImageTextToText`` / ``AutoProcessor``), exactly as a user loads their own model.

Measured on a fixed, seeded subset of the test split (sizes in the output):
- clean perception / answer accuracy, and the reasoning errors on negated yes/no questions;
- the same per corruption kind at severities 1-5;
- mean KL between answer-token distributions on the clean and an all-black image;
- greedy generation latency per answer at batch 1, and the process's peak RSS.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/reference_quality.py [--n-clean 1000] [--n-corrupt 200]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _provenance import provenance, relative
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForImageTextToText, AutoProcessor

from guardrail.data import CORRUPTIONS, Example, corrupt, load_easyvqa
from guardrail.reference import reference_model_path
from guardrail.reference.quality import Graded, black_image_kl, generate_answers, grade

RESULTS = Path(__file__).resolve().parent / "results" / "reference_quality.json"


def _rates(graded: list[Graded], examples: list[Example]) -> dict[str, Any]:
    negated = [g for g, e in zip(graded, examples, strict=True) if e.question_type == "negated_yes_no"]
    return {
        "n": len(graded),
        "perception_accuracy": sum(g.perception_correct for g in graded) / len(graded),
        "answer_accuracy": sum(g.answer_correct for g in graded) / len(graded),
        "negated_n": len(negated),
        "negated_reasoning_errors": sum(g.reasoning_error for g in negated),
        "reasoning_errors": sum(g.reasoning_error for g in graded),
    }


def _evaluate(model: Any, processor: Any, examples: list[Example], kind: str | None, severity: int) -> Any:
    images = [e.image() for e in examples]
    if kind is not None:
        images = [corrupt(im, kind, severity, seed=i) for i, im in enumerate(images)]
    texts = generate_answers(model, processor, images, [e.question for e in examples])
    return [grade(e, t) for e, t in zip(examples, texts, strict=True)], texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=reference_model_path())
    parser.add_argument("--n-clean", type=int, default=1000, help="test questions for the clean figures")
    parser.add_argument("--n-corrupt", type=int, default=200, help="test questions per kind and severity")
    parser.add_argument("--n-kl", type=int, default=200)
    parser.add_argument("--n-latency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on a shared CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(args.threads)

    # transformers leaves PreTrainedModel.eval and AutoProcessor.from_pretrained unannotated
    model = AutoModelForImageTextToText.from_pretrained(args.model).eval()  # type: ignore[no-untyped-call]
    processor = AutoProcessor.from_pretrained(args.model)  # type: ignore[no-untyped-call]
    test = load_easyvqa("test")
    rng = random.Random(args.seed)
    clean_set = rng.sample(test, min(args.n_clean, len(test)))

    graded, texts = _evaluate(model, processor, clean_set, None, 0)
    clean = _rates(graded, clean_set)
    examples_of_errors = [
        {"question": e.question, "scene": e.scene.describe(), "answer": e.answer, "generated": g.text}
        for e, g in zip(clean_set, graded, strict=True)
        if not g.answer_correct
    ][:10]

    corrupted: dict[str, dict[str, Any]] = {}
    corrupt_set = clean_set[: args.n_corrupt]
    for kind in CORRUPTIONS:
        corrupted[kind] = {}
        for severity in range(1, 6):
            corrupted[kind][str(severity)] = _rates(
                _evaluate(model, processor, corrupt_set, kind, severity)[0], corrupt_set
            )
    by_severity = {
        str(s): statistics.fmean(corrupted[k][str(s)]["perception_accuracy"] for k in CORRUPTIONS) for s in range(1, 6)
    }

    kl_set = clean_set[: args.n_kl]
    kl = black_image_kl(
        model, processor, [e.image() for e in kl_set], [e.question for e in kl_set], texts[: len(kl_set)]
    )

    latency_set = clean_set[: args.n_latency]
    lat_images = [e.image() for e in latency_set]
    generate_answers(model, processor, lat_images[:3], [e.question for e in latency_set[:3]], batch_size=1)
    seconds = []
    for image, e in zip(lat_images, latency_set, strict=True):
        t0 = time.perf_counter()
        generate_answers(model, processor, [image], [e.question], batch_size=1)
        seconds.append(time.perf_counter() - t0)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    weights = sum(f.stat().st_size for f in args.model.iterdir() if f.is_file())
    result = {
        **provenance(__file__),
        "model": relative(args.model),
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "model_dir_bytes": weights,
        "seed": args.seed,
        "clean": clean,
        "clean_wrong_examples": examples_of_errors,
        "corrupted": corrupted,
        "corrupted_mean_perception_by_severity": by_severity,
        "black_image_kl_nats": {**kl, "n": len(kl_set)},
        "latency_ms_per_answer": {
            "n": len(seconds),
            "mean": 1000 * statistics.fmean(seconds),
            "median": 1000 * statistics.median(seconds),
            "p90": 1000 * sorted(seconds)[int(0.9 * (len(seconds) - 1))],
            "batch_size": 1,
            "torch_threads": torch.get_num_threads(),
        },
        "peak_rss_mib": peak_rss_mib,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "bench_seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _print(result)


def _print(result: dict[str, Any]) -> None:
    console = Console()
    clean = result["clean"]
    table = Table(title=f"reference model on easy-VQA test (clean n={clean['n']})")
    for column in ("condition", "perception acc", "answer acc", "negated reasoning errors"):
        table.add_column(column)
    table.add_row(
        "clean",
        f"{clean['perception_accuracy']:.3f}",
        f"{clean['answer_accuracy']:.3f}",
        f"{clean['negated_reasoning_errors']}/{clean['negated_n']}",
    )
    for kind, by_severity in result["corrupted"].items():
        for severity, r in by_severity.items():
            table.add_row(
                f"{kind} s{severity} (n={r['n']})",
                f"{r['perception_accuracy']:.3f}",
                f"{r['answer_accuracy']:.3f}",
                f"{r['negated_reasoning_errors']}/{r['negated_n']}",
            )
    console.print(table)
    kl, lat = result["black_image_kl_nats"], result["latency_ms_per_answer"]
    console.print(
        f"KL(clean || black) nats, n={kl['n']}: whole answer {kl['sequence']:.3f}; per token: all "
        f"{kl['all']:.3f}, vision span {kl['vision']:.3f}, boxed answer {kl['boxed']:.3f}"
    )
    console.print(
        f"latency per answer (batch 1, greedy, n={lat['n']}): mean {lat['mean']:.1f} ms, "
        f"median {lat['median']:.1f} ms; peak RSS {result['peak_rss_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
