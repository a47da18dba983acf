"""The ``guardrail`` command line: a thin layer over the library, with real exit codes.

Exit codes: 0 success, 1 a check found problems, 2 bad usage or bad input.
Each command group lives in its own module and registers itself on ``app`` below.
"""

from __future__ import annotations

import typer

from .. import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="guardrail",
    help="The confidence guardrail for multimodal agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
        train,  # noqa: F401
    )


def main() -> None:
    """Entry point of the ``guardrail`` console script."""
    _register()
    app()
