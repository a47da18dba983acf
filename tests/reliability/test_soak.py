"""Soak: thousands of guarded calls with random faults, hangs and bad images mixed in, on many threads.

The guard, its worker pool, the policy engine, image decoding and the zoom view provider are real; the model is a
seeded random one that fails in every way a model can (raises, hangs past the budget, returns the wrong type,
writes invalid signals), and a share of the requests carry images that cannot be used. Checked: every call
returns exactly one result, nothing is accepted after an error, memory stays bounded, and no worker leaks.
"""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from guardrail import BackendError, Generation, GenerationOptions, Guard, GuardResult, ImageBlock, Request, Signals
from guardrail._pool import shared_pool
from guardrail.backends.base import Backend
from guardrail.images import decode_image
from tests.support.fakes import Answered
from tests.support.faults import png16, policy, wait_until

FAULTS = {"ok": 70, "raise": 8, "hang": 3, "wrong type": 2, "slow": 5, "bad signals": 4, "estimator raises": 4}
"""Relative weights of what one model attempt does."""


@dataclass
class ChaosModel:
    """A seeded model that misbehaves at random; each attempt's behaviour depends only on (question, attempt)."""

    release: threading.Event = field(default_factory=threading.Event)
    name: str = "chaos"
    hang_seconds: float = 1.0
    attempts: Answered[int] = field(default_factory=Answered, repr=False)
    """The attempt each generation answered, for ``estimate``."""

    def _fault(self, question: str, attempt: int, salt: str) -> tuple[str, random.Random]:
        rng = random.Random(f"{question}/{attempt}/{salt}")
        return rng.choices(list(FAULTS), weights=list(FAULTS.values()))[0], rng

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        for i, block in enumerate(request.images):  # as real backends do: a bad image fails the call
            decode_image(block, name=f"image {i}")
        fault, rng = self._fault(request.question, options.attempt, "generate")
        if fault == "raise":
            raise rng.choice([RuntimeError, BackendError, ValueError, KeyError, OSError])("injected")
        if fault == "hang":
            self.release.wait(self.hang_seconds)  # far past the budget; returns eventually, so no thread leaks
        if fault == "slow":
            time.sleep(0.005)
        if fault == "wrong type":
            return "not a Generation"  # type: ignore[return-value]
        answer = f"{request.question}/a{options.attempt}"
        generation = Generation(text=f"\\boxed{{{answer}}}", answer=answer, model=self.name)
        return self.attempts.note(generation, options.attempt)

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        fault, rng = self._fault(request.question, self.attempts[generation], "estimate")
        if fault == "estimator raises":
            raise RuntimeError("estimator injected")
        if fault == "bad signals":
            return Signals(visual=float("nan"), reasoning=2.0)  # a pydantic ValidationError: invalid signals
        visual = None if rng.random() < 0.05 else rng.random()
        return Signals(visual=visual, reasoning=rng.random())


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _images(tmp: Path) -> dict[str, Callable[[], list[ImageBlock]]]:
    good = ImageBlock.from_bytes(_png(Image.new("RGB", (48, 48), (200, 30, 30))))
    grey16 = ImageBlock.from_path(png16(tmp / "grey16.png", 48, 48, (0x8000,)))
    transparent = ImageBlock.from_bytes(_png(Image.new("RGBA", (48, 48), (0, 0, 0, 0))))
    truncated = ImageBlock.from_bytes(_png(Image.new("RGB", (48, 48), (1, 2, 3)))[:-40])
    garbage = ImageBlock.from_bytes(b"definitely not an image")
    remote = ImageBlock(url="https://example.com/cat.png")
    return {
        "good": lambda: [good],
        "grey16": lambda: [grey16],
        "transparent": lambda: [transparent],
        "truncated": lambda: [truncated],
        "garbage": lambda: [garbage],
        "remote": lambda: [remote],
    }


IMAGE_WEIGHTS = {"good": 85, "grey16": 5, "transparent": 3, "truncated": 3, "garbage": 2, "remote": 2}
BAD_IMAGES = {"transparent", "truncated", "garbage", "remote"}


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _check(question: str, kind: str, result: GuardResult) -> None:
    assert result.answer is None or result.status == "accepted"
    assert len(result.attempts) <= 3
    assert result.attempts or result.final_decision.rule == "on_exhausted"
    if kind in BAD_IMAGES:  # no attempt could read the image: never an answer
        assert result.status != "accepted"
        assert result.error is not None
    if result.status != "accepted":
        return
    last = result.attempts[-1]
    assert result.error is None, "accepted with an error"
    assert last.error is None
    assert last.generation is not None
    assert result.answer == last.generation.answer == f"{question}/a{last.index}"
    assert last.decision.action.value == "accept"
    assert last.decision.rule not in ("on_error", "on_exhausted")
    assert result.confidence is not None
    assert result.confidence.overall is not None
    assert result.confidence.overall >= 0.5


def soak(n: int, tmp: Path, *, threads: int = 16, seed: int = 0) -> dict[str, int]:
    model = ChaosModel()
    guard = Guard(
        model,
        estimator=model,
        policy=policy(
            max_seconds=0.15,
            rules=[
                {"when": {"overall": {"unknown": True}}, "do": "abstain"},
                {"when": {"visual": {"below": 0.2}}, "do": "fetch_more_views", "with": {"views": 1}},
                {"when": {"overall": {"below": 0.5}}, "do": "re_ask"},
            ],
            on_error="re_ask",
        ),
    )
    images = _images(tmp)
    rng = random.Random(seed)
    work = [(f"q{i}", rng.choices(list(IMAGE_WEIGHTS), weights=list(IMAGE_WEIGHTS.values()))[0]) for i in range(n)]
    results: dict[str, GuardResult] = {}
    lock = threading.Lock()

    def one(item: tuple[str, str]) -> None:
        question, kind = item
        request = Request.from_question(question, images[kind]())
        result = guard.run(request) if int(question[1:]) % 4 else asyncio.run(guard.arun(request))
        with lock:
            assert question not in results, "two results for one call"
            results[question] = result

    pool = shared_pool()
    threads_before = threading.active_count()
    with ThreadPoolExecutor(threads) as executor:
        list(executor.map(one, work[:200]))  # warm-up: caches, lazy imports, worker threads
        rss_start = _rss_mib()
        list(executor.map(one, work[200:]))
    rss_end = _rss_mib()

    assert sorted(results) == sorted(q for q, _ in work), "a call was lost"
    for question, kind in work:
        _check(question, kind, results[question])

    model.release.set()  # the hung calls return now; their abandoned threads must all exit
    assert wait_until(lambda: pool.stats().abandoned == 0 and pool.stats().running == 0, timeout=10), pool.stats()
    assert threading.active_count() <= threads_before + pool.stats().max_workers
    assert rss_end - rss_start < 100, f"memory grew by {rss_end - rss_start:.0f} MiB"

    statuses: dict[str, int] = {}
    for result in results.values():
        statuses[result.status] = statuses.get(result.status, 0) + 1
        if result.error is not None:
            statuses[f"error:{result.error.type}"] = statuses.get(f"error:{result.error.type}", 0) + 1
    return statuses


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="memory is read from /proc")
def test_a_short_soak(tmp_path: Path) -> None:
    start = time.perf_counter()
    statuses = soak(400, tmp_path)
    print(statuses)
    assert time.perf_counter() - start < 60
    assert statuses["accepted"] > 100
    assert statuses["error:BackendTimeout"] > 0
    assert statuses["error:ImageError"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="memory is read from /proc")
def test_a_long_soak(tmp_path: Path) -> None:
    start = time.perf_counter()
    statuses = soak(4000, tmp_path, threads=32, seed=1)
    elapsed = time.perf_counter() - start
    assert elapsed < 300
    print(f"4000 calls in {elapsed:.1f} s: {statuses}")
