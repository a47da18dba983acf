"""Paths as results files and artifacts record them: relative to the repository, never this machine's layout.

A benchmark's results (``bench/results/*.json``), a model folder's ``training_config.json`` and a calibration
artifact's ``info`` are read on other machines; an absolute path such as ``/home/me/guardrail/...`` says nothing
there and leaks the machine it was made on. So every path they record goes through :func:`recorded_path`: relative
to the repository (the folder that holds the ``guardrail`` package: the checkout, or ``site-packages`` when
installed, where the shipped model folders are ``guardrail/reference/...``) where it lies inside it, else as given
(a user's own model elsewhere is named as the user named it). :func:`recorded_command` does the same for each
word of a command line.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

__all__ = ["REPOSITORY", "recorded_command", "recorded_path"]

REPOSITORY = Path(__file__).resolve().parents[1]
"""The folder that holds the ``guardrail`` package: the repository in a checkout."""


def recorded_path(path: str | os.PathLike[str], *, root: str | os.PathLike[str] = REPOSITORY) -> str:
    """``path`` relative to ``root`` (default: the repository) where it lies inside it, else as given.

    A relative ``path`` is taken from the current directory; symbolic links are followed only when the path as
    written does not lie inside ``root``.

    >>> recorded_path(REPOSITORY / "guardrail" / "reference" / "model")
    'guardrail/reference/model'
    >>> recorded_path("/elsewhere/model")
    '/elsewhere/model'
    """
    given = Path(path)
    base = Path(root).resolve()
    for candidate in (given.absolute(), _resolved(given)):
        if candidate is not None and candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix() or "."
    return str(path)


def recorded_command(words: Sequence[str], *, root: str | os.PathLike[str] = REPOSITORY) -> str:
    """A command line as a shell would take it, each absolute path in it (a word, or the value of ``--flag=PATH``)
    recorded by :func:`recorded_path`; every other word unchanged.

    >>> recorded_command(["guardrail", "calibrate", "--out", str(REPOSITORY / "x.json"), "--seed=0"])
    'guardrail calibrate --out x.json --seed=0'
    """
    return shlex.join(_recorded_word(word, root) for word in words)


def _recorded_word(word: str, root: str | os.PathLike[str]) -> str:
    flag, equals, value = word.partition("=")
    if equals and flag.startswith("-") and os.path.isabs(value):
        return f"{flag}={recorded_path(value, root=root)}"
    return recorded_path(word, root=root) if os.path.isabs(word) else word


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop, an unreadable folder: as written
        return None
