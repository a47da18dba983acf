"""Guard a model behind an OpenAI-compatible server: here the reference model served by ``transformers serve``.

Most deployments reach their vision-language model over HTTP (vLLM, SGLang, TGI, ``transformers serve``). The
guard talks to such a server with ``OpenAICompatibleBackend`` and measures what a black box allows with
``AgreementEstimator``: token log-probs and the verbalized scores where the server returns them, the
perturbation KL where the server can re-score an answer (vLLM's prompt log-probs), else agreement of the
answers under perturbed images. Every confidence says which signals produced it, and ``problems`` says what
the server could not provide. No calibration artifact is given here, so the confidences are raw scores: the guard
warns (``UncalibratedWarning``) and its default policy accepts no answer (``on_uncalibrated``); give it the
artifact fitted on these signals to guard for real.

By default this starts ``transformers serve`` on 127.0.0.1 (offline, CPU) with the embedded reference model and
stops it at the end; ``--base-url URL --served-model ID`` uses a server you already run instead.

Run:  python examples/openai_compatible.py [--model DIR | --base-url URL --served-model ID]
Needs: pip install 'lvlm-guardrail[openai]' 'transformers[serving]'
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw

from guardrail import Guard, Request
from guardrail.backends.openai import OpenAICompatibleBackend
from guardrail.confidence.blackbox import AgreementEstimator
from guardrail.reference import reference_model_path

SERVE = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"


def free_port() -> int:
    """A local TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def transformers_serve(model_dir: str | Path, *, port: int | None = None, timeout: float = 180.0) -> Iterator[str]:
    """Run ``transformers serve MODEL_DIR`` on 127.0.0.1 (offline, CPU) and yield its base URL (``.../v1``).

    The server is pinned to the model, so requests name it by the same path. It is stopped on exit, and its log
    is shown when it fails to come up.
    """
    port = port or free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-c", SERVE, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
               "--device", "cpu", "--log-level", "error"]  # fmt: skip
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"transformers serve did not come up on port {port}:\n{log.read()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    time.sleep(0.3)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def shape_image(colour: str = "red", size: int = 64) -> Image.Image:
    """An easy-VQA-like picture: one coloured circle on white."""
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=colour)
    return image


def guarded_call(base_url: str, model: str, question: str) -> int:
    """One guarded call through the server; prints the outcome and which signals were measured."""
    backend = OpenAICompatibleBackend(base_url, model, name="served-reference", timeout=60, max_tokens=48)
    guard = Guard(backend, estimator=AgreementEstimator(draws=2, patch_size=8), policy="default")
    try:
        result = guard.run(Request.from_question(question, [shape_image()]))
    finally:
        backend.close()
    print(f"status={result.status} answer={result.answer!r} policy={result.policy}")
    for attempt in result.attempts:
        signals = attempt.signals
        text = "" if attempt.generation is None else attempt.generation.text
        print(f"attempt {attempt.index}: {attempt.decision.action.value} ({attempt.decision.rule}) text={text[:60]!r}")
        if signals is not None:
            print(f"  visual={signals.visual} reasoning={signals.reasoning} holistic={signals.holistic}")
            print(f"  sources={dict(signals.sources)}")
            for problem in signals.problems:
                print(f"  not measured: {problem}")
    if result.error is not None:
        print(f"error: {result.error.stage}: {result.error.type}: {result.error.message}")
    return 0 if result.error is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(reference_model_path()), help="model folder to serve")
    parser.add_argument("--base-url", help="use this running server instead of starting one")
    parser.add_argument("--served-model", help="the model id on --base-url")
    parser.add_argument("--question", default="What color is the shape?")
    args = parser.parse_args(argv)
    if args.base_url:
        if not args.served_model:
            parser.error("--base-url needs --served-model (the id the server knows the model by)")
        return guarded_call(args.base_url, args.served_model, args.question)
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"no model at {args.model} (is the reference model built?); pass --model DIR or --base-url")
    with transformers_serve(args.model) as base_url:
        return guarded_call(base_url, args.model, args.question)


if __name__ == "__main__":
    raise SystemExit(main())
