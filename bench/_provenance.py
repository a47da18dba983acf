"""What every results file records: the commit and the exact command that produced it, and when."""

from __future__ import annotations

import contextlib
import datetime as _dt
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["provenance"]

_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance() -> dict[str, Any]:
    """``{"commit", "dirty", "command", "date"}`` of this run (commit ``None`` outside a git checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):  # a script outside the project keeps its own path
        script = script.resolve().relative_to(_ROOT)
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "command": shlex.join([".venv/bin/python", str(script), *sys.argv[1:]]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
