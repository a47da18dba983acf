"""The ``guardrail`` command line: a thin layer over the library, with real exit codes.

Exit codes: 0 success, 1 a check found problems (or a batch line failed), 2 bad usage or bad input, 130 / 143
stopped by SIGINT / SIGTERM (long commands finish the current item first; see ``_interrupt.py``).
Each command group lives in its own module and registers itself on ``app`` below.
"""

from __future__ import annotations

import typer

from .._version import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="guardrail",
    help="The confidence guardrail for multimodal agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: wrapped to the terminal, never an option name cut short
)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


def _register() -> None:
    # Command modules import their heavy dependencies lazily, inside the commands.
    from . import (
        ask,  # noqa: F401
        calibrate,  # noqa: F401
        demo,  # noqa: F401
        escalations,  # noqa: F401
        policy,  # noqa: F401
        report,  # noqa: F401
        train_grpo,  # noqa: F401
        train_reference,  # noqa: F401
        train_verbalized,  # noqa: F401
    )


def main() -> None:
    """Entry point of the ``guardrail`` console script."""
    from ._interrupt import Interrupted, exit_process

    _register()
    try:
        app()
    except SystemExit as exc:
        if not isinstance(exc.code, int | None):
            raise
        exit_process(exc.code or 0)
    except Interrupted as stop:  # a command that does not report its own progress
        typer.echo(f"interrupted by {stop.name}", err=True)
        exit_process(stop.exit_code)
