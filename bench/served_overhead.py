"""Benchmark: added latency of the guard over a plain call to a served model, as a ratio, in one run.

    .venv/bin/python bench/served_overhead.py [--rounds 10] [--max-tokens 24]

Starts ``transformers serve`` on 127.0.0.1 (CPU, offline) with the reference model (or, while it is not built,
a tiny random LLaVA), then times, interleaved round by round after a warm-up:

- **plain**: one ``openai`` chat completion with the image, as an agent would make without the guard;
- **guarded, K re-queries**: ``Guard.run`` with ``OpenAICompatibleBackend`` and ``AgreementEstimator(draws=K)``
  under an accept-everything policy (one attempt, so remedies do not muddy the figure). Against
  ``transformers serve`` (no log-probs, no prompt log-probs) the visual signal is answer agreement, so a guarded
  call is 1 + K model calls plus the guard's own work; the refused scoring probe is made once and remembered.

The ratio is median(guarded) / median(plain) over the same interleaved rounds (both suffer the same CPU
contention on a shared machine; the load average is recorded). ``best_ratio_to_plain`` compares the fastest
rounds, and ``own_ms_from_best`` = best(guarded) - (1 + K) x best(plain) estimates what is not model time (image
perturbation, PNG encoding, parsing, the loop).
Results go to bench/results/served_overhead.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "served_overhead.json"
sys.path.insert(0, str(ROOT))  # the example's server launcher and, without the reference model, the tiny model

from guardrail import Guard, Policy, Request  # noqa: E402
from guardrail.backends._remote import openai_messages  # noqa: E402
from guardrail.backends.openai import OpenAICompatibleBackend  # noqa: E402
from guardrail.confidence.blackbox import AgreementEstimator  # noqa: E402
from guardrail.reference import reference_model_path  # noqa: E402


def _example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "example_openai_compatible", ROOT / "examples" / "openai_compatible.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_dir(scratch: Path) -> tuple[str, str]:
    path = reference_model_path()
    if (path / "config.json").is_file():
        return str(path), "reference model"
    from tests.support.tiny_vlms import tiny_llava

    model, processor = tiny_llava()
    model.save_pretrained(scratch)
    processor.save_pretrained(scratch)
    return str(scratch), "tiny random LLaVA (reference model not built yet)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()[0]
    example = _example()
    request = Request.from_question("What color is the shape?", [example.shape_image("red")])
    policy = Policy.model_validate({"version": 1, "name": "accept", "rules": [], "otherwise": "accept"})
    with tempfile.TemporaryDirectory() as scratch:
        model_dir, model_label = _model_dir(Path(scratch))
        with example.transformers_serve(model_dir) as base_url:
            backend = OpenAICompatibleBackend(base_url, model_dir, timeout=120, max_tokens=args.max_tokens)
            body = {"model": model_dir, "messages": openai_messages(request), "max_tokens": args.max_tokens,
                    "temperature": 0.0}  # fmt: skip
            guards = {  # no artifact: raw scores, accepted through the explicit opt-in (one attempt, as before)
                k: Guard(backend, estimator=AgreementEstimator(draws=k), policy=policy, allow_uncalibrated=True)
                for k in args.draws
            }

            def plain() -> None:
                backend._client.chat.completions.create(**body)

            timings: dict[str, list[float]] = {"plain": [], **{f"guarded K={k}": [] for k in args.draws}}
            calls: dict[str, Any] = {"plain": plain, **{f"guarded K={k}": guards[k].run for k in args.draws}}
            for name, call in calls.items():  # warm-up: model load, first scoring probe
                call() if name == "plain" else call(request)
            for _ in range(args.rounds):
                for name, call in calls.items():
                    start = time.perf_counter()
                    call() if name == "plain" else call(request)
                    timings[name].append(time.perf_counter() - start)
            backend.close()

    plain_ms = statistics.median(timings["plain"]) * 1e3
    results: dict[str, Any] = {"plain": {"median_ms": plain_ms, "best_ms": min(timings["plain"]) * 1e3}}
    for k in args.draws:
        values = timings[f"guarded K={k}"]
        median_ms = statistics.median(values) * 1e3
        best_ms = min(values) * 1e3
        results[f"guarded K={k}"] = {
            "median_ms": median_ms,
            "best_ms": best_ms,
            "ratio_to_plain": median_ms / plain_ms,
            "best_ratio_to_plain": best_ms / results["plain"]["best_ms"],
            "model_calls": 1 + k,
            "own_ms_from_best": best_ms - (1 + k) * results["plain"]["best_ms"],
        }
    report = {
        **provenance(__file__, list(sys.argv[1:] if argv is None else argv)),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "machine": f"{platform.machine()}, CPython {platform.python_version()}, {os.cpu_count()} CPUs (shared)",
        "server": "transformers serve (CPU), 127.0.0.1",
        "model": model_label,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "visual_signal": "answer agreement (the server offers no log-probs and no prompt log-probs)",
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
