"""Benchmark: guarded answers per second, one request at a time against ``Guard.run_batch``, on the CPU.

    .venv/bin/python bench/batch_throughput.py [--items 64] [--rounds 2] [--sizes 1 4 16] [--threads 1]

The shipped reference model behind ``load_guard()`` (its calibration, the default policy: re-asks and more views
included) answers the same easy-VQA test questions (``easyvqa_items("test", limit=N, seed=0)``, corrupted as in
calibration) at each batch size: size 1 is ``Guard.run`` one request after the other, size B is
``Guard.run_batch(requests, batch_size=B)``. Sizes alternate within each round (the order rotated from round to
round), so that slow phases of this shared machine hit them alike; the throughput ratio against size 1 is taken per
round and its median reported. Every batched run's results must equal the one-at-a-time results (status, answer,
decisions exactly; confidences within ``MODEL_OUTPUT_TOLERANCE``, as a padded batch sums in another order): a run
where they differ is reported as a failure, not a speed.

Goal (issue 17): >= 3x items per second at batch 16 against batch 1. Results: bench/results/batch_throughput.json,
with the commit and command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _provenance import provenance

from guardrail import GuardResult, Request, load_guard
from guardrail.backends.base import MODEL_OUTPUT_TOLERANCE
from guardrail.data.labelled import easyvqa_items

RESULTS = Path(__file__).parent / "results" / "batch_throughput.json"
GOAL = 3.0


def _decided(result: GuardResult) -> tuple[object, ...]:
    return (result.status, result.answer, [(d.action, d.rule) for d in result.decisions])


def _same(a: list[GuardResult], b: list[GuardResult]) -> bool:
    if [_decided(r) for r in a] != [_decided(r) for r in b]:
        return False
    for x, y in zip(a, b, strict=True):
        cx, cy = x.confidence, y.confidence
        for name in ("visual", "reasoning", "overall"):
            vx = None if cx is None else getattr(cx, name)
            vy = None if cy is None else getattr(cy, name)
            if (vx is None) != (vy is None) or (
                vx is not None and vy is not None and not MODEL_OUTPUT_TOLERANCE.close(vx, vy)
            ):
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    guard = load_guard()
    requests: list[Request] = [item.request for item in easyvqa_items("test", limit=args.items, seed=0)]
    guard.run_batch(requests[:4], batch_size=4)  # warm up: weights paged in, kernels chosen
    sizes = sorted(set(args.sizes) | {1})
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    reference: list[GuardResult] | None = None
    equal: dict[int, bool] = {}
    for round_index in range(args.rounds):
        order = sizes[round_index % len(sizes) :] + sizes[: round_index % len(sizes)]
        for size in order:
            start = time.perf_counter()
            results = [guard.run(r) for r in requests] if size == 1 else guard.run_batch(requests, batch_size=size)
            seconds[size].append(time.perf_counter() - start)
            if size == 1 and reference is None:
                reference = results
            elif size != 1:
                equal[size] = equal.get(size, True) and (reference is None or _same(reference, results))
            print(
                f"round {round_index + 1}, batch {size}: {len(requests) / seconds[size][-1]:.2f} items/s",
                file=sys.stderr,
            )
    assert reference is not None
    for size in sizes:  # sizes measured before the first one-at-a-time run are checked now
        if size != 1 and size not in equal:
            equal[size] = _same(reference, guard.run_batch(requests, batch_size=size))
    per_size: dict[str, Any] = {}
    for size in sizes:
        ratios = [base / own for base, own in zip(seconds[1], seconds[size], strict=True)]
        per_size[str(size)] = {
            "items_per_second": [len(requests) / s for s in seconds[size]],
            "median_items_per_second": len(requests) / statistics.median(seconds[size]),
            "speedup_vs_batch_1": statistics.median(ratios),
            "results_equal_to_batch_1": True if size == 1 else equal[size],
        }
    statuses = {s: sum(r.status == s for r in reference) for s in ("accepted", "abstained", "escalated")}
    report = {
        **provenance(),
        "items": len(requests),
        "rounds": args.rounds,
        "threads": args.threads,
        "statuses": statuses,
        "attempts": sum(len(r.attempts) for r in reference),
        "sizes": per_size,
        "goal": {"batch": 16, "speedup": GOAL},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for size, row in per_size.items():
        print(
            f"batch {size:>3}: {row['median_items_per_second']:.2f} items/s, {row['speedup_vs_batch_1']:.2f}x, "
            f"results equal: {row['results_equal_to_batch_1']}"
        )
    return 0 if all(row["results_equal_to_batch_1"] for row in per_size.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
