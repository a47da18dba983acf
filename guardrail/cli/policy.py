"""``guardrail policy ...``: work with policy files."""

from __future__ import annotations

import typer

from . import app

policy_app = typer.Typer(help="Validate and inspect policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
