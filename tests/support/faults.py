"""Faults to inject into real guards: a model that hangs until released, one that fails on cue, and images.

These are the *faults* under test; the guard, its worker pool, policies, decoding and the CLI around them are the
real parts.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardrail import Generation, GenerationOptions, Policy, Request, Signals
from guardrail.backends.base import Backend


def policy(max_seconds: float | None = 2.0, **overrides: Any) -> Policy:
    """A small policy: accept confident answers, re-ask on an error, abstain when the budget is spent."""
    data: dict[str, Any] = {
        "version": 1,
        "name": "reliability",
        "budget": {"max_attempts": 3, "max_seconds": max_seconds},
        "rules": [{"name": "doubtful", "when": {"overall": {"below": 0.5}}, "do": "re_ask"}],
        "otherwise": "accept",
        "on_error": "re_ask",
        "accept_uncalibrated": True,  # the fakes' numbers stand for calibrated confidences; no calibrator here
    }
    data.update(overrides)
    return Policy.model_validate(data)


def answer(text: str = "red", name: str = "model") -> Generation:
    """A structured answer as a backend would return it."""
    return Generation(
        text=f"<think><vision>a {text} shape</vision><reasoning>it is {text}</reasoning></think> \\boxed{{{text}}}",
        answer=text,
        model=name,
        token_logprobs=(-0.05,),
    )


@dataclass
class HangingModel:
    """Never answers until ``release`` is set (then answers normally): a hung server or a deadlocked model."""

    release: threading.Event = field(default_factory=threading.Event)
    name: str = "hanging"
    entered: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        with self._lock:
            self.entered += 1
        self.release.wait()
        return answer(name=self.name)

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        return Signals(visual=0.9, reasoning=0.9)


@dataclass
class HealthyModel:
    """Answers at once, confidently."""

    name: str = "healthy"

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        return answer(name=self.name)

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        return Signals(visual=0.9, reasoning=0.9)


@dataclass
class FlakyModel:
    """Fails the attempts listed in ``fail_on`` (by attempt index) with ``error``; answers the others."""

    fail_on: frozenset[int] = frozenset({0})
    error: Callable[[str], Exception] = RuntimeError
    name: str = "flaky"

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        if options.attempt in self.fail_on:
            raise self.error(f"injected failure on attempt {options.attempt}")
        return answer(name=self.name)

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        return Signals(visual=0.9, reasoning=0.9)


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def png16(path: Path, width: int, height: int, value: tuple[int, ...], *, level: int = 6) -> Path:
    """Write a uniform 16-bit PNG (1 value: greyscale, 2: grey + alpha, 3: RGB, 4: RGBA), streamed row by row.

    Pillow cannot write 16-bit colour PNGs, and a big image must not need its pixels in memory to be written.
    """
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[len(value)]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + struct.pack(f">{len(value)}H", *value) * width
    compressor = zlib.compressobj(level)
    with path.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)))
        idat = bytearray()
        for _ in range(height):
            idat += compressor.compress(row)
            if len(idat) > 1 << 20:
                out.write(chunk(b"IDAT", bytes(idat)))
                idat.clear()
        idat += compressor.flush()
        out.write(chunk(b"IDAT", bytes(idat)))
        out.write(chunk(b"IEND", b""))
    return path
