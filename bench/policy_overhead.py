"""Benchmark: microseconds per policy decision, and the guard loop's overhead per call with a no-op model.

    .venv/bin/python bench/policy_overhead.py [--repeats 20000]

Goals (issue 2): engine <= 20 us per decision, loop <= 200 us per call on the 2-core development machine.
The loop is measured with a model and estimator that do nothing, so every microsecond is the guard's own:
building the request's plan, the decision, the records, and (with a time budget) the hand-off to a worker thread.
Results go to bench/results/policy_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from _provenance import provenance
from rich.console import Console
from rich.table import Table

from guardrail import Confidence, Decision, Generation, GenerationOptions, Guard, Policy, Request, Signals, decide
from guardrail.policy import load_policy

RESULTS = Path(__file__).parent / "results" / "policy_overhead.json"


class NoOpModel:
    """Answers instantly and scores itself as confident: the loop's overhead is all that is left."""

    name = "noop"
    _generation = Generation(text="\\boxed{yes}", answer="yes", model="noop")
    _signals = Signals(visual=0.9, reasoning=0.9)

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        return self._generation

    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        return self._generation

    def estimate(self, backend: object, request: Request, generation: Generation) -> Signals:
        return self._signals

    async def aestimate(self, backend: object, request: Request, generation: Generation) -> Signals:
        return self._signals


def per_call_us(fn: Callable[[], object], repeats: int, rounds: int = 5) -> dict[str, float]:
    """Median and best of ``rounds`` timings of ``repeats`` calls, in microseconds per call."""
    fn()  # warm up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        samples.append((time.perf_counter() - start) / repeats * 1e6)
    return {"median_us": statistics.median(samples), "best_us": min(samples)}


def _engine_call(policy: Policy, confidence: Confidence) -> Callable[[], Decision]:
    """One engine decision on ``confidence``, as a call without arguments to time."""
    return lambda: decide(policy, confidence, attempt=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20000)
    args = parser.parse_args()
    repeats = args.repeats

    policy = load_policy("default")
    no_time_limit = policy.model_copy(update={"budget": policy.budget.model_copy(update={"max_seconds": None})})
    confidences = {
        "first rule": Confidence(visual=0.2, reasoning=0.9, overall=0.33),
        "no rule (otherwise)": Confidence(visual=0.95, reasoning=0.95, overall=0.95),
        "unknown component": Confidence(visual=None, reasoning=0.9, overall=None),
    }
    model = NoOpModel()
    request = Request.from_question("Is there a red circle?")
    # The no-op model's scores stand for calibrated ones: the loop runs the policy's rules as with an artifact.
    timed_guard = Guard(model, estimator=model, policy=policy, allow_uncalibrated=True)
    untimed_guard = Guard(model, estimator=model, policy=no_time_limit, allow_uncalibrated=True)

    results: dict[str, dict[str, float]] = {}
    for label, confidence in confidences.items():
        results[f"engine: {label}"] = per_call_us(_engine_call(policy, confidence), repeats)
    loop_repeats = max(repeats // 10, 100)
    results["loop: sync, no time budget"] = per_call_us(lambda: untimed_guard.run(request), loop_repeats)
    results["loop: sync, 30 s budget (worker thread)"] = per_call_us(lambda: timed_guard.run(request), loop_repeats)

    async def async_batch(n: int) -> None:
        for _ in range(n):
            await timed_guard.arun(request)

    start = time.perf_counter()
    asyncio.run(async_batch(loop_repeats))
    results["loop: async, 30 s budget"] = {"median_us": (time.perf_counter() - start) / loop_repeats * 1e6}

    engine_worst = max(v["median_us"] for k, v in results.items() if k.startswith("engine"))
    loop_worst = max(v["median_us"] for k, v in results.items() if k.startswith("loop"))
    summary = {
        **provenance(__file__),
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "policy": policy.name,
        "repeats": repeats,
        "results": results,
        "engine_worst_median_us": engine_worst,
        "loop_worst_median_us": loop_worst,
        "goals": {"engine_us": 20, "loop_us": 200},
        "engine_meets_goal": engine_worst <= 20,
        "loop_meets_goal": loop_worst <= 200,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")

    table = Table(title=f"Policy engine and guard loop overhead (policy {policy.name!r})")
    table.add_column("what")
    table.add_column("median µs/call", justify="right")
    for label, value in results.items():
        table.add_row(label, f"{value['median_us']:.1f}")
    console = Console()
    console.print(table)
    console.print(f"engine worst {engine_worst:.1f} µs (goal 20), loop worst {loop_worst:.1f} µs (goal 200)")
    console.print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
