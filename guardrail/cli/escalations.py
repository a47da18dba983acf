"""``guardrail escalations ...``: list and resolve questions waiting on a human reviewer.

``list --db FILE`` reads the SQLite checkpoint database (opened read-only) and prints each pending escalation:
thread id, question, candidate answer, confidences and reason (``--json`` for one JSON object per line). It loads
no model.

``resolve THREAD --db FILE (--approve | --edit TEXT | --answer TEXT | --reject [--reason TEXT])`` resumes the
thread with the decision. Resuming needs the graph that paused: ``--graph`` names a factory
``factory(checkpointer) -> compiled graph`` as ``package.module:function`` or ``path/to/file.py:function``
(default: the standard guardrail graph over the reference model, whose model is never loaded to resume).

Exit codes: 0 done; 1 no pending escalation for that thread; 2 bad usage, bad decision, missing database, a file
that is not a checkpoint database (left unchanged), or a bad graph factory.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from . import app

__all__ = ["escalations_app"]

escalations_app = typer.Typer(help="List and resolve escalations waiting on a human.", no_args_is_help=True)
app.add_typer(escalations_app, name="escalations")

_DB = typer.Option("--db", help="SQLite checkpoint database (langgraph-checkpoint-sqlite).", metavar="FILE")


@escalations_app.command("list")
def list_(
    db: Annotated[str, _DB],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the pending escalations: thread id, question, candidate answer, confidences, reason."""
    from ..errors import InputError
    from ..integrations.escalations import list_escalations, open_saver

    try:
        with open_saver(db, read_only=True) as saver:
            pending = list_escalations(saver)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for item in pending:
        if as_json:
            typer.echo(json.dumps({"thread_id": item.thread_id, **item.payload}, sort_keys=True))
            continue
        typer.echo(f"thread {item.thread_id}")
        typer.echo(f"  question:   {_printable(item.question)}")
        typer.echo(
            f"  candidate:  {_printable(item.candidate_answer) if item.candidate_answer is not None else '(none)'}"
        )
        typer.echo(f"  confidence: {_confidences(item.confidence)}")
        typer.echo(f"  reason:     {item.reason}")
    if not pending and not as_json:
        typer.echo("no pending escalations")


@escalations_app.command()
def resolve(
    thread: Annotated[str, typer.Argument(help="Thread id of the escalation (see `escalations list`).")],
    db: Annotated[str, _DB],
    approve: Annotated[bool, typer.Option("--approve", help="Accept the candidate answer.")] = False,
    edit: Annotated[str | None, typer.Option("--edit", help="Replace the candidate with a corrected answer.")] = None,
    answer: Annotated[str | None, typer.Option("--answer", help="Answer the question yourself.")] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Give no answer.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (with --reject).")] = None,
    graph: Annotated[
        str | None,
        typer.Option("--graph", help="Graph factory 'module:function' or 'file.py:function' (default: reference)."),
    ] = None,
) -> None:
    """Resume a paused thread with the reviewer's decision and print the final answer."""
    from ..errors import ConfigurationError, InputError
    from ..integrations.escalations import DEFAULT_GRAPH, resolve_escalation

    chosen = [name for name, on in (("--approve", approve), ("--edit", edit is not None),
                                    ("--answer", answer is not None), ("--reject", reject)) if on]  # fmt: skip
    if len(chosen) != 1:
        typer.echo(
            f"error: give exactly one of --approve, --edit TEXT, --answer TEXT, --reject (got {chosen or 'none'})",
            err=True,
        )
        raise typer.Exit(2)
    decision: dict[str, Any]
    if approve:
        decision = {"type": "approve"}
    elif edit is not None:
        decision = {"type": "edit", "answer": edit}
    elif answer is not None:
        decision = {"type": "answer", "answer": answer}
    else:
        decision = {"type": "reject", **({"reason": reason} if reason else {})}
    from ..integrations.escalations import open_saver

    try:
        with open_saver(db) as saver:
            state = resolve_escalation(saver, thread, decision, graph=graph or DEFAULT_GRAPH)
    except LookupError as exc:
        typer.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(1) from exc
    except (InputError, ConfigurationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    messages = state.get("messages") or []
    final = messages[-1].content if messages else ""
    typer.echo(f"thread {thread}: {decision['type']}; final message: {_printable(str(final))}")


def _printable(text: str) -> str:
    """One line, control characters shown as escapes: a model's answer must not garble the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _confidences(confidence: Any) -> str:
    from ..integrations._review import confidences_text

    return confidences_text(confidence or {})
