"""What every results file records: the commit and the exact command that produced it, and when."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guardrail._paths import recorded_command, recorded_path

__all__ = ["provenance"]

_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES")
"""Environment variables that change what a benchmark measures; the command records those that are set."""


def relative(path: str | Path) -> str:
    """``path`` relative to the repository where it lies inside it (results must not record this machine's paths),
    else as given: ``guardrail._paths.recorded_path``, the one rule for results and artifacts alike."""
    return recorded_path(path, root=_ROOT)


def provenance(script: str | Path | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "command", "date"}`` of this run (commit ``None`` outside a git checkout).

    ``dirty``: whether tracked files other than the results themselves (``bench/results/``) differ from the commit.

    The command is the one that reproduces the run: the environment variables of ``ENVIRONMENT`` that are set,
    the interpreter (``.venv/bin/python`` when it is the project's), the script (default ``sys.argv[0]``) and its
    arguments (default ``sys.argv[1:]``; a benchmark's ``main(argv)`` passes its own).
    """
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    executable = Path(sys.executable)
    interpreter = relative(executable) if executable.is_relative_to(_ROOT) else executable.name
    script_path = Path(script if script is not None else sys.argv[0]).absolute()
    with contextlib.suppress(OSError):
        script_path = script_path.resolve()
    arguments = list(sys.argv[1:] if argv is None else argv)
    environment = [f"{name}={os.environ[name]}" for name in ENVIRONMENT if name in os.environ]
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "command": shlex.join([*environment, interpreter, relative(script_path)])
        + (" " + recorded_command(arguments, root=_ROOT) if arguments else ""),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
