"""Durable human escalation: one process asks and exits; another, later, resolves it from the database.

1. ``start``: the guarded graph runs on a hard-to-see image with a SQLite checkpointer. The policy sends every
   answer that is not clearly confident to a human, so the graph pauses in its review node and the process
   exits: nothing is held in memory.
2. A reviewer, later and in another process, lists what waits and resolves it with the ``guardrail`` CLI::

       guardrail escalations list --db escalations.sqlite
       guardrail escalations resolve THREAD --db escalations.sqlite --answer red \\
           --graph examples/human_escalation.py:build_graph

   ``--graph`` names the factory that rebuilds this graph over the database (``build_graph`` below). Resuming
   runs only the review node: the model is never called (nor even loaded) again. To see the image while deciding,
   open the review page instead (it prints its address)::

       guardrail escalations serve --db escalations.sqlite --graph examples/human_escalation.py:build_graph

Many agent processes (on many machines) share one PostgreSQL database instead (``pip install
'lvlm-guardrail[postgres]'``): give ``--db postgresql://USER@HOST/DATABASE`` here and to every ``guardrail
escalations`` command (the password from ``PGPASSWORD`` or ``~/.pgpass``, or in the URL), and ``--images DIR``, a
folder the reviewer can read, for the escalated images: a PostgreSQL database has no folder beside it.

Run the whole round trip:  python examples/human_escalation.py [--db FILE|URL] [--images DIR] [--answer TEXT]
[--model DIR]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from PIL import Image, ImageDraw

from guardrail import Guard, load_guard
from guardrail.integrations import guardrail_graph, open_saver

HERE = Path(__file__).resolve()
POLICY = """\
version: 1
name: human-unless-sure
description: Accept only clearly confident answers; a human reviews everything else.
budget: {max_attempts: 1, max_seconds: null}
rules:
  - name: sure
    when: {overall: {at_least: 0.95}}
    do: accept
otherwise: escalate
on_error: escalate
on_uncalibrated: escalate  # a model without its calibration artifact: a human reviews every answer
"""


def build_guard(model_dir: str | None = None) -> Guard:
    """The one place this example chooses its model: the embedded reference model unless told otherwise."""
    # load_guard: transformers backend + decoupled estimator + the model's calibration artifact, in one call.
    # The model folder defaults to $GUARDRAIL_MODEL, else the embedded reference model.
    return load_guard(model_dir, policy=POLICY)


def build_graph(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    """The graph factory the CLI rebuilds: the guard is built only if the model is called (never to resume)."""
    return guardrail_graph(build_guard, checkpointer=checkpointer)


def hard_to_see() -> HumanMessage:
    """A red circle, mostly hidden behind a grey occluder."""
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((14, 14, 50, 50), fill="red")
    draw.rectangle((0, 8, 64, 56), fill=(128, 128, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return HumanMessage(
        content=[
            {"type": "image", "base64": data, "mime_type": "image/png"},
            {"type": "text", "text": "What color is the shape?"},
        ]
    )


def start(db: str, thread: str, images: str | None = None) -> int:
    """Process one: ask, and exit while the question waits for a human."""
    with open_saver(db, must_exist=False) as saver:  # a SQLite file or a postgresql:// URL
        # Escalated images go beside a SQLite file by default; `images` names the folder (needed for PostgreSQL).
        graph = guardrail_graph(build_guard, checkpointer=saver, image_store=images)
        state = graph.invoke({"messages": [hard_to_see()]}, {"configurable": {"thread_id": thread}})
    if "__interrupt__" not in state:
        print(f"answered without a human: {state['messages'][-1].content!r}")
        return 0
    pending = state["__interrupt__"][0].value
    print(f"waiting for a human on thread {thread}: candidate {pending['candidate_answer']!r}, {pending['reason']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=["start", "demo"], default="demo")
    parser.add_argument("--db", help="SQLite checkpoint file or postgresql:// URL (default: a temporary file)")
    parser.add_argument("--images", help="folder for escalated images (default: beside a SQLite file)")
    parser.add_argument("--thread", default="review-1")
    parser.add_argument("--answer", default="red", help="the reviewer's answer in the demo")
    parser.add_argument("--model", help="a transformers vision-language model folder (default: reference model)")
    args = parser.parse_args(argv)
    if args.model:
        os.environ["GUARDRAIL_MODEL"] = args.model  # the child processes build the same guard
    if args.step == "start":
        return start(args.db, args.thread, args.images)
    db = args.db or str(Path(tempfile.mkdtemp()) / "escalations.sqlite")
    run = [sys.executable, str(HERE), "start", "--db", db, "--thread", args.thread]
    run += ["--images", args.images] if args.images else []
    subprocess.run(run, check=True)  # process one exits while the question waits
    cli = [sys.executable, "-m", "guardrail.cli", "escalations"]
    subprocess.run([*cli, "list", "--db", db], check=True)
    resolve = [*cli, "resolve", args.thread, "--db", db, "--answer", args.answer, "--graph", f"{HERE}:build_graph"]
    return subprocess.run(resolve, check=False).returncode  # 1 when nothing was waiting


if __name__ == "__main__":
    raise SystemExit(main())
