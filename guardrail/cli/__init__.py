"""The ``guardrail`` command line: a thin layer over the library, with real exit codes.

Exit codes: 0 success, 1 a check found problems (or a batch line failed), 2 bad usage or bad input, 130 / 143
stopped by SIGINT / SIGTERM (long commands finish the current item first; see ``_interrupt.py``).
Each command group lives in its own module and registers itself on ``app`` below.
"""

from __future__ import annotations

import os

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


def _passive_thread_waits() -> None:
    """Let torch's idle CPU threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless the user set it.

    torch runs its CPU kernels on one OpenMP thread per core, and by default a thread that finishes its share spins
    for a while waiting for the next one. On a small machine that other processes also use, the spinning threads
    take the cores the working one needs: one guarded call on the reference model took 2 to 7 s of wall time on a
    busy 2-core machine with spinning threads, 0.1 to 0.4 s with sleeping ones. Waking a sleeping thread costs
    microseconds, nothing beside a model call. OpenMP reads the setting when torch loads it, so this runs before
    any command imports torch; it is the command line's choice for its own process, never the library's.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    """Entry point of the ``guardrail`` console script."""
    from ._interrupt import Interrupted, exit_process

    _passive_thread_waits()
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
