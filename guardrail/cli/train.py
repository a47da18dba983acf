"""``guardrail train``: the one training entry point, with a subcommand per kind of run.

- ``guardrail train reference``: the tiny reference model from scratch (``train_reference.py``);
- ``guardrail train verbalized``: the reference model taught to write its own confidence (``train_verbalized.py``);
- ``guardrail train grpo``: any model, GRPO with the paper's reward and TAR on TRL (``train_grpo.py``).

The former top-level commands (``train-reference``, ``train-verbalized``, ``train-calibration``) still run, for one
release: they are hidden from ``guardrail --help`` and print a deprecation note to stderr first
(:func:`deprecated_alias`). Every training command refuses an output folder inside the installed package unless
``--force`` (:func:`refuse_package_folder`): the package's shipped models must not be replaced by accident.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from . import app
from ._outputs import fail

__all__ = ["deprecated_alias", "refuse_package_folder", "train_app"]

train_app = typer.Typer(
    name="train",
    help="Train a model: the reference model, its verbalized variant, or any model with GRPO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: wrapped to the terminal, never an option name cut short
)
app.add_typer(train_app, name="train")


def deprecated_alias(old: str, new: str, command: Callable[..., None]) -> None:
    """Register ``command`` on the top-level app under its former name ``old`` as well: hidden from ``--help``,
    with the same options, and printing ``note: `guardrail OLD` is deprecated ...; use `guardrail NEW``` to stderr
    before it runs."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        typer.echo(
            f"note: `guardrail {old}` is deprecated and will be removed in the next release; use `guardrail {new}`",
            err=True,
        )
        command(*args, **kwargs)

    app.command(old, hidden=True, help=f"Deprecated: use `guardrail {new}`.")(run)


def _package_folder() -> Path:
    import guardrail

    return Path(guardrail.__file__).resolve().parent


def refuse_package_folder(path: Path, *, option: str = "--out", force: bool = False) -> None:
    """Refuse, unless ``force``, an output folder inside the installed ``guardrail`` package (the shipped reference
    models live there; an installed package is no place for a user's output either)."""
    package = _package_folder()
    if force or not path.resolve().is_relative_to(package):
        return
    fail(
        f"{option} {path} is inside the installed guardrail package ({package}), whose shipped files it would "
        "replace; choose another folder, or give --force to write there anyway"
    )
