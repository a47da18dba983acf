"""Outputs checked before the work: a command that would fail to save its result refuses at once, not at the end.

``guardrail train-verbalized --out`` once trained for a quarter of an hour and then met a ``FileExistsError``
(an existing file) or a ``PermissionError`` (a read-only folder) when saving. Every command that writes a file or
a folder therefore checks it first, before loading a model or data:

- the place must be of the right kind: a file is not a folder, a folder is not a file;
- an existing output is refused unless ``--force`` (a folder only when it holds something: an empty folder made
  for the purpose is fine), so that nothing is replaced by accident;
- the folder the output goes into (or its nearest existing parent, for one still to be made) must take a new
  file: a file is really created there and removed, because permission bits do not say it (a read-only file
  system, root, access-control lists).

A problem is one line, ``error: --out PATH: ...``, and exit code 2, like every other bad input of the CLI.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import NoReturn

import typer

__all__ = ["WORLDS", "check_output_file", "check_output_folder", "check_world", "fail"]

WORLDS: tuple[str, ...] = ("easy-vqa", "scenes")
"""The built-in question worlds a command's ``--world`` takes."""


def fail(message: str) -> NoReturn:
    """The CLI's one-line refusal of bad input: ``error: message`` on stderr, exit code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def check_world(world: str) -> None:
    """Exit with a one-line error unless ``world`` is one of :data:`WORLDS`."""
    if world not in WORLDS:
        fail(f"--world {world!r}: expected {' or '.join(WORLDS)}")


def check_output_file(path: Path, *, option: str = "--out", force: bool = False) -> None:
    """Refuse (see the module docstring) a file output the command could not write, or would overwrite."""
    where = f"{option} {path}"
    if path.is_dir():
        fail(f"{where} is a folder; give the name of a file (e.g. {path / 'calibration.json'})")
    if path.exists() or path.is_symlink():
        if not force:
            fail(f"{where} exists; give --force to replace it")
        if not path.is_file():
            fail(f"{where} exists and is not a regular file")
    _check_writable(where, path.parent)


def check_output_folder(path: Path, *, option: str = "--out", force: bool = False, note: str = "") -> None:
    """Refuse (see the module docstring) a folder output the command could not write, or would write over.

    ``note`` is added to the refusal of an existing folder (e.g. that it is the default)."""
    where = f"{option} {path}"
    if path.exists() and not path.is_dir():
        fail(f"{where} is a file, not a folder")
    if path.is_dir():
        if not force and _holds_anything(path):
            fail(
                f"{where} exists and is not empty{note}; give --force to write into it (files of the same names "
                "are replaced)"
            )
        _check_writable(where, path)
    else:
        _check_writable(where, path.parent)


def _holds_anything(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError:
        return True  # unreadable: assume it holds something, and let the write check say more


def _check_writable(where: str, folder: Path) -> None:
    """Refuse when no file can be created in ``folder`` (or in its nearest existing parent, where it would be
    made)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: creating the folder would fail
            fail(f"{where}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        fail(f"{where}: cannot be created, {existing} is a file")
    try:
        handle, name = tempfile.mkstemp(prefix=".guardrail-write-check-", dir=existing)
    except OSError as exc:
        fail(f"{where}: {existing} is not writable ({exc.strerror or exc})")
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)
