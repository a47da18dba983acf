"""``guardrail policy ...``: validate and inspect policy files.

``check`` prints one ``FILE:LINE:COL: message`` line per problem (exit 1) or ``FILE: OK`` (exit 0); ``show``
prints a policy's rules, in the order they are tried, with their actions and normalised parameters
(defaults filled in).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import PolicyError
from ..policy import Policy, Threshold, builtin_policy_names, check_policy_file, load_policy
from ..policy.schema import CertifiedBound, Condition
from . import app

__all__ = ["policy_app"]

policy_app = typer.Typer(help="Validate and inspect policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command()
def check(
    files: Annotated[list[str], typer.Argument(help="Policy YAML files to validate.", metavar="FILE...")],
    context: Annotated[
        bool, typer.Option("--context", "-c", help="Also print the offending line with a caret under the spot.")
    ] = False,
) -> None:
    """Validate policy files: one `FILE:LINE:COL: message` line per problem, exit 1 if any."""
    failed = False
    for name in files:
        problems = check_policy_file(name)
        for problem in problems:
            typer.echo(problem.format(with_snippet=context))
        if not problems:
            typer.echo(f"{name}: OK")
        failed = failed or bool(problems)
    raise typer.Exit(1 if failed else 0)


@policy_app.command()
def show(
    policy: Annotated[str, typer.Argument(help="A policy file, or the name of a built-in policy (default, ...).")],
) -> None:
    """Print a policy's rules in the order they are tried, with their actions and parameters."""
    if not Path(policy).exists() and policy not in builtin_policy_names():
        typer.echo(
            f"no such file, and no built-in policy named {policy!r} (built-ins: {', '.join(builtin_policy_names())})",
            err=True,
        )
        raise typer.Exit(2)
    try:
        loaded = load_policy(Path(policy) if Path(policy).exists() else policy)
    except PolicyError as exc:
        for problem in exc.problems:
            typer.echo(problem.format())
        raise typer.Exit(1) from None
    _print_policy(loaded)


def _print_policy(policy: Policy) -> None:
    """Plain text, one block per rule: readable at any terminal width and easy to diff."""
    budget = policy.budget
    seconds = "no time limit" if budget.max_seconds is None else f"at most {budget.max_seconds:g} s"
    lines = [f"policy {policy.name} (version {policy.version})"]
    if policy.description:
        lines.append(f"  {policy.description}")
    lines.append(f"budget: at most {budget.max_attempts} attempts, {seconds}")
    lines.append("rules (tried in order; the first that matches decides):")
    for index, rule in enumerate(policy.rules):
        lines.append(f"  [{index}] {rule.name or '(unnamed)'}")
        lines.append(f"      when  {describe_condition(rule.when)}")
        lines.append(f"      do    {_action(rule.do, rule.params)}")
    if not policy.rules:
        lines.append("  (none)")
    lines.append(f"otherwise     {_action(policy.otherwise.do, policy.otherwise.params)}")
    lines.append(f"on_exhausted  {_action(policy.on_exhausted.do, policy.on_exhausted.params)}")
    lines.append(f"on_error      {_action(policy.on_error.do, policy.on_error.params)}")
    if policy.accept_uncalibrated:  # without a calibration: the rules, or on_uncalibrated before them
        lines.append("on_uncalibrated  the rules decide on raw scores (accept_uncalibrated: true)")
    else:
        lines.append(f"on_uncalibrated  {_action(policy.on_uncalibrated.do, policy.on_uncalibrated.params)}")
    typer.echo("\n".join(lines))


def describe_condition(when: Condition) -> str:
    """A condition as text: ``visual < 0.5 and reasoning >= 0.5``, ``visual unknown``, ``attempt < 1``."""
    parts = [_describe_threshold(name, threshold) for name, threshold in when.components()]
    if when.attempt is not None:
        if when.attempt.at_least is not None:
            parts.append(f"attempt >= {when.attempt.at_least}")
        if when.attempt.below is not None:
            parts.append(f"attempt < {when.attempt.below}")
    return " and ".join(parts)


def _describe_threshold(name: str, threshold: Threshold) -> str:
    parts = []
    if threshold.unknown is not None:
        parts.append(f"{name} {'unknown' if threshold.unknown else 'known'}")
    for op, bound in (
        ("<", threshold.below),
        ("<=", threshold.at_most),
        (">", threshold.above),
        (">=", threshold.at_least),
    ):
        if isinstance(bound, CertifiedBound):
            parts.append(f"{name} {op} certified(max_error={bound.max_error:g}, delta={bound.delta:g})")
        elif bound is not None:
            parts.append(f"{name} {op} {bound:g}")
    return " and ".join(parts)


def _action(do: str, params: Mapping[str, Any]) -> str:
    shown = ", ".join(
        f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in params.items()
    )
    return f"{do} ({shown})" if shown else do
