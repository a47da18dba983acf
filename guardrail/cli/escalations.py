"""``guardrail escalations ...``: list and resolve questions waiting on a human reviewer.

``--db`` names the checkpoint database: a SQLite file, or a PostgreSQL database by a ``postgresql://`` URL (the
``postgres`` extra), shared by every agent process that checkpoints there. A URL's password is never printed (it may
also come from ``PGPASSWORD`` or ``~/.pgpass``, which keeps it off the command line).

``list --db FILE|URL`` reads the checkpoint database (opened read-only) and prints each pending escalation:
thread id, question, candidate answer, confidences, reason, the rule that escalated, the model's perception and
reasoning, and where each image is (``--json`` for one JSON object per line). It loads no model.

``resolve THREAD --db FILE|URL (--approve | --edit TEXT | --answer TEXT | --reject [--reason TEXT])`` resumes the
thread with the decision. Resuming needs the graph that paused: ``--graph`` names a factory
``factory(checkpointer) -> compiled graph`` as ``package.module:function`` or ``path/to/file.py:function``
(default: the standard guardrail graph over the reference model, whose model is never loaded to resume). A thread
is resolved once: a second ``resolve`` (on PostgreSQL even one running at the same moment) finds nothing pending.

``serve --db FILE|URL [--graph FACTORY] [--images DIR] [--host 127.0.0.1] [--port N]`` runs the review page: a
local web application that shows each pending escalation with its images and resumes the thread with the
reviewer's decision, as ``resolve`` does. Images are read where the escalation recorded them; ``--images`` names an
image store to look in by hash when that path cannot be read here (default: the folder beside a SQLite file). It
prints its address with a fresh access token (``http://127.0.0.1:PORT/?token=...``); every request without the
token is refused. ``--port 0`` (the default) picks a free port. It answers only to the host names it was bound for
(bound to every interface, ``--host 0.0.0.0``: this machine's own names and addresses); ``--allow-host NAME`` adds
another, such as a DNS name or a proxy's. A database it cannot read or write at a request (locked, read-only) is a
503 page saying why. Needs the ``review`` extra.

Exit codes: 0 done; 1 no pending escalation for that thread; 2 bad usage, bad decision, missing database, a file
or PostgreSQL database that is not a checkpoint database (left unchanged), a server that cannot be reached or
refuses the login, a bad graph factory, an address that cannot be bound or a missing ``review`` or ``postgres``
extra; ``serve`` stops on SIGINT (130) or SIGTERM.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from . import app

__all__ = ["escalations_app"]

escalations_app = typer.Typer(help="List and resolve escalations waiting on a human.", no_args_is_help=True)
app.add_typer(escalations_app, name="escalations")

_DB = typer.Option(
    "--db",
    help="Checkpoint database: a SQLite file, or a postgresql:// URL (the `postgres` extra).",
    metavar="FILE|URL",
)


@escalations_app.command("list")
def list_(
    db: Annotated[str, _DB],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the pending escalations: thread id, question, candidate answer, confidences, reason."""
    from ..errors import ConfigurationError, InputError
    from ..integrations.escalations import list_escalations, open_saver

    try:
        with open_saver(db, read_only=True) as saver:
            pending = list_escalations(saver)
    except (InputError, ConfigurationError) as exc:
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
        # Payloads saved by earlier versions have none of what follows.
        if item.rule is not None:
            tested = f" (tested {_tested(item.components, item.decision_confidence)})" if item.components else ""
            typer.echo(f"  rule:       {_printable(item.rule)}{tested}")
        for label, text in (("perception", item.perception), ("reasoning", item.reasoning)):
            if text is not None:
                typer.echo(f"  {label + ':':<11} {_printable(text)}")
        for image in item.images:
            typer.echo(f"  image:      {_image(image)}")
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


@escalations_app.command()
def serve(
    db: Annotated[str, _DB],
    graph: Annotated[
        str | None,
        typer.Option("--graph", help="Graph factory 'module:function' or 'file.py:function' (default: reference)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; the default serves this machine only.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: a free one).")] = 0,
    images: Annotated[
        str | None,
        typer.Option(
            "--images",
            help="Image store to find escalated images in by hash when their recorded path is not readable here "
            "(default: the folder beside a SQLite file; none for PostgreSQL).",
            metavar="DIR",
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another name the page is reached by (a DNS name, a proxy's), added to the names it answers to; "
            "repeatable.",
            metavar="NAME",
        ),
    ] = None,
) -> None:
    """Serve the review page: pending escalations with their images; approve, edit, answer or reject."""
    from ..errors import ConfigurationError, InputError
    from ..integrations.escalations import DEFAULT_GRAPH, redacted

    try:
        from ..integrations.review_app import ReviewServer
    except ImportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        server = ReviewServer(
            db, graph=graph or DEFAULT_GRAPH, host=host, port=port, images=images, allowed_hosts=tuple(allow_host or ())
        )
    except (InputError, ConfigurationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from exc
    if server.exposed:
        typer.echo(
            f"warning: listening on {host}, beyond this machine, over plain HTTP: anyone who can reach it and sees "
            "the token can review",
            err=True,
        )
        typer.echo(
            f"answering to the host names {', '.join(server.host_names)} (others with --allow-host NAME)", err=True
        )
    typer.echo(f"Reviewing the escalations pending in {redacted(db)}; open this address (it holds the access token):")
    typer.echo(f"    {server.url}", color=False)
    typer.echo("Stop with Ctrl+C.")
    try:
        server.serve()
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
        raise typer.Exit(130) from None


def _printable(text: str) -> str:
    """One line, control characters shown as escapes: a model's answer must not garble the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _image(image: Any) -> str:
    """Where an image of an escalation is: its path or URL (a small inline one by size), and its hash."""
    from ..image_refs import is_data_url

    ref, sha = image.get("ref"), image.get("sha256")
    if ref is None:
        where = "(not stored)"
    elif is_data_url(str(ref)):
        where = f"(inline, {image.get('size')} bytes)"
    else:
        where = _printable(str(ref))
    extra = [f"sha256 {sha}" if isinstance(sha, str) else "", "a view" if image.get("source") == "view" else ""]
    extra.append(str(image.get("note") or ""))
    shown = "; ".join(e for e in extra if e)
    return f"{where} ({shown})" if shown else where


def _tested(components: tuple[str, ...], decided: Any) -> str:
    """The components the escalating rule tested, each with the value it acted on (names alone for a payload saved
    before those values were kept)."""
    from ..integrations._review import format_confidence

    if decided is None:
        return ", ".join(components)
    return ", ".join(f"{name} {format_confidence(decided.get(name))}" for name in components)


def _confidences(confidence: Any) -> str:
    from ..integrations._review import confidences_text

    return confidences_text(confidence or {})
