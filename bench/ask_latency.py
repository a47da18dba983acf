"""Benchmark: the wall time of one ``guardrail ask IMAGE QUESTION`` on the shipped reference model, start to exit.

    .venv/bin/python bench/ask_latency.py [--runs 5] [--model FOLDER]

Goal (issue 32): <= 6 s on a 2-core machine. Each run is a fresh process, as a user typing the command gets:
importing the command line, torch and transformers, loading the guard (model, processor, calibration artifact,
policy), one guarded call and printing it. The image is a 64 x 64 red disc on white that the script draws. Beside
the command, the same number of runs of a process that only imports torch and the model's transformers class
(``import floor``) show how much of the time is left to the guard at all; the two alternate, run after run, so
that both see the same machine. Both are medians over ``--runs``; the machine's load average is recorded with
them, since on a shared machine wall time grows with it. Results go to bench/results/ask_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _provenance import provenance, relative
from PIL import Image, ImageDraw

RESULTS = Path(__file__).parent / "results" / "ask_latency.json"
ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 6.0
QUESTION = "what shape is this?"
IMPORT_FLOOR = "import torch, transformers; transformers.LlavaForConditionalGeneration"
"""What any process that runs the reference model must import: torch and the model's class."""


def draw_image(folder: Path) -> Path:
    """A 64 x 64 red disc on white, saved as PNG in ``folder``."""
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill="red")
    path = folder / "disc.png"
    image.save(path)
    return path


def wall_seconds(command: Sequence[str]) -> float:
    """The wall time of ``command`` run from the repository root (so that it runs this checkout's code); raises
    when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be an int >= 1, got {args.runs}")

    with tempfile.TemporaryDirectory() as folder:
        image = draw_image(Path(folder))
        model = [] if args.model is None else ["--model", str(args.model.absolute())]
        ask = [sys.executable, "-m", "guardrail.cli", "ask", str(image), QUESTION, *model]
        floor = [sys.executable, "-c", IMPORT_FLOOR]
        load_before = list(os.getloadavg())
        wall_seconds(floor)  # warm the file cache once, for both
        asks, floors = [], []
        for _ in range(args.runs):
            asks.append(wall_seconds(ask))
            floors.append(wall_seconds(floor))
        load_after = list(os.getloadavg())

    median = statistics.median(asks)
    shown = ["python", "-m", "guardrail.cli", "ask", "disc.png", QUESTION]
    if args.model is not None:
        shown += ["--model", relative(args.model)]
    summary = {
        **provenance(__file__, argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_1m_5m_15m_before": load_before,
        "load_average_1m_5m_15m_after": load_after,
        "measured": shlex.join(shown) + "  (disc.png: a 64 x 64 red disc the script draws; run from the repository)",
        "runs": args.runs,
        "ask_wall_s": asks,
        "ask_wall_s_median": median,
        "import_floor": f"python -c {shlex.quote(IMPORT_FLOOR)}",
        "import_floor_wall_s": floors,
        "import_floor_wall_s_median": statistics.median(floors),
        "goal_s": GOAL_S,
        "meets_goal": median <= GOAL_S,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"guardrail ask: median {median:.2f} s over {args.runs} runs (goal <= {GOAL_S:g} s; runs "
        f"{', '.join(f'{s:.2f}' for s in asks)}); importing torch and the model class alone: median "
        f"{summary['import_floor_wall_s_median']:.2f} s; load average {load_before[0]:.1f} -> {load_after[0]:.1f}. "
        f"Written to {relative(RESULTS)}"
    )


if __name__ == "__main__":
    main()
