"""``guardrail demo``: the guarded agent on corrupted easy-VQA images, against the model alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from . import app
from ._interrupt import Interrupted, StopFlag, stop_on_signals
from ._outputs import check_output_folder, check_world, fail

__all__ = ["demo"]


@app.command()
def demo(
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Questions to answer.")] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the question sample, corruptions and reviewer.")] = 0,
    out: Annotated[Path, typer.Option(help="Output folder (report, traces, summary).")] = Path("guardrail-demo"),
    policy: Annotated[str, typer.Option(help="Policy file or built-in name.")] = "default",
    model: Annotated[
        Path | None, typer.Option(help="Model folder or shipped name. Default: the --world's shipped model.")
    ] = None,
    world: Annotated[
        str,
        typer.Option(
            help="easy-vqa (one shape, graded corruptions) or scenes (2-5 small shapes on 256x256, clean): the "
            "questions, and the shipped model when --model is not given."
        ),
    ] = "easy-vqa",
    reviewer_accuracy: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Accuracy of the stand-in reviewer who answers escalations.")
    ] = 0.9,
    interactive: Annotated[bool, typer.Option(help="Answer escalations yourself instead.")] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Conversations run at once, their model calls batched (1: one by one).")
    ] = 16,
    review_later: Annotated[
        bool,
        typer.Option(
            "--review-later",
            help="Leave escalations pending, to review them with their images on the review page "
            "(`guardrail escalations serve`).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Write into --out even if it holds files (an earlier demo's are replaced).")
    ] = False,
) -> None:
    """Run a LangGraph agent through the guard on N corrupted easy-VQA test questions and compare.

    --out is checked first: a folder that holds files is refused without --force, one that cannot be written
    always. SIGINT / SIGTERM stop after the current questions (exit 130 / 143); traces of finished questions are
    kept, no summary is written.
    """
    if interactive and review_later:
        fail("give at most one of --interactive and --review-later")
    check_world(world)
    check_output_folder(out, force=force)
    review: Literal["stand-in", "interactive", "later"] = (
        "later" if review_later else "interactive" if interactive else "stand-in"
    )
    with stop_on_signals() as stop:
        try:
            _demo(n, seed, out, policy, model, world, reviewer_accuracy, review, batch_size, stop)
        except Interrupted as interrupted:
            typer.echo(
                f"interrupted by {interrupted.name} after {stop.done} of {n} questions; no summary written", err=True
            )
            raise typer.Exit(interrupted.exit_code) from None


def _demo(
    n: int,
    seed: int,
    out: Path,
    policy: str,
    model: Path | None,
    world: str,
    reviewer_accuracy: float,
    review: Literal["stand-in", "interactive", "later"],
    batch_size: int,
    stop: StopFlag,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..data.labelled import easyvqa_items, scenes_items
    from ..demo import StandInReviewer, run_demo
    from ..errors import GuardrailError
    from ..pretrained import find_artifact, model_path
    from ._calibration import load_guard_telling_calibration

    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = model_path(model if model is not None or world == "easy-vqa" else "scenes")
    except GuardrailError as exc:
        fail(str(exc))
    telemetry, trace_file = _file_telemetry(out / "traces.jsonl")
    try:
        with console.status("loading the model and the calibration"):
            guard = load_guard_telling_calibration(
                model_dir, opt_in=None, policy=policy, telemetry=telemetry, batch_size=batch_size
            )
        if world == "scenes":
            with console.status(f"preparing {n} scenes test questions"):
                items = scenes_items("test", limit=n, seed=seed)
        else:
            with console.status(f"preparing {n} easy-VQA test questions under graded corruptions"):
                items = easyvqa_items("test", limit=n, seed=seed)
    except (GuardrailError, OSError) as exc:
        fail(str(exc))
    reviewer: Any
    if review == "later":
        reviewer, who = None, "you, later, on the review page"
    elif review == "interactive":
        reviewer, who = _InteractiveReviewer(console), "you"
    else:
        reviewer = StandInReviewer(accuracy=reviewer_accuracy, seed=seed)
        who = f"a stand-in reviewer who is right {reviewer_accuracy:.0%} of the time"
    console.print(
        f"[bold]guardrail demo[/]: {n} questions, policy [cyan]{guard.policy.name}[/], escalations answered by {who}"
    )
    columns: list[Any] = [TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]

    def advance(_: object) -> None:
        stop.done += 1
        progress.advance(task)
        stop.check()  # between questions: a stop asked for during this one ends the run here

    try:
        with Progress(*columns, console=console, disable=review == "interactive") as progress:
            task = progress.add_task("demo", total=n)
            summary = run_demo(
                items, guard=guard, reviewer=reviewer, out_dir=out, on_outcome=advance, batch_size=batch_size
            )
    finally:
        shutdown = getattr(telemetry, "shutdown", None)
        if shutdown is not None:  # the no-op telemetry (OTEL_SDK_DISABLED) has nothing to flush
            shutdown()
        trace_file.close()
    report = None
    artifact_path = find_artifact(model_dir)
    if artifact_path is not None:
        from ..calibration.artifact import load_artifact
        from ..calibration.report import write_report

        report = write_report(load_artifact(artifact_path), out / "calibration")
    _print_summary(console, summary, who)
    console.print(f"\nwritten to [bold]{out}/[/]: summary.json, traces.jsonl (OpenTelemetry spans, one per line)")
    if report is not None:
        console.print(f"calibration report: [bold]{report}[/]")
    if summary.pending_reviews:
        console.print(
            f"\n[bold yellow]{summary.pending_reviews} escalations wait for your review.[/] Open the review page "
            "(images, perception, confidences; it prints its address):"
        )
        console.print(f"    guardrail escalations serve --db {summary.review_db}", soft_wrap=True, highlight=False)
        console.print("or list them in the terminal:")
        console.print(f"    guardrail escalations list --db {summary.review_db}", soft_wrap=True, highlight=False)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _print_summary(console: Any, summary: Any, who: str) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.n} corrupted easy-VQA questions ({summary.seconds:.0f} s)")
    table.add_column("")
    table.add_column("coverage", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_row("model alone (first answer)", "100.0%", _pct(summary.unguarded_accuracy))
    table.add_row("guarded: answers the model gave", _pct(summary.model_coverage), _pct(summary.model_accuracy))
    table.add_row("guarded: with reviewed escalations", _pct(summary.agent_coverage), _pct(summary.agent_accuracy))
    console.print(table)
    actions = Table(title="what the policy did")
    actions.add_column("action")
    actions.add_column("times", justify="right")
    for name, count in summary.actions.items():
        actions.add_row(name, str(count))
    console.print(actions)
    reviewed = (
        f"{summary.pending_reviews} left for you to review"
        if summary.pending_reviews
        else f"answered by {who}; their accuracy here {_pct(summary.reviewer_accuracy)}"
    )
    console.print(f"escalations: {summary.escalations} ({reviewed}), abstentions: {summary.abstentions}")
    rate = summary.n / summary.seconds if summary.seconds > 0 else 0.0
    if summary.batch_size == 1:
        console.print(f"mean latency the guard added per question: {summary.mean_added_seconds * 1000:.0f} ms")
        console.print(f"{rate:.1f} questions per second, one conversation at a time")
    else:
        console.print(
            f"{rate:.1f} questions per second, {summary.batch_size} conversations at a time (their model calls "
            "batched); `--batch-size 1` measures the latency the guard adds to one"
        )


def _file_telemetry(path: Path) -> tuple[Any, Any]:
    """Telemetry that writes every span as one JSON line to ``path``."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    from ..telemetry import configure_telemetry

    handle = path.open("w", encoding="utf-8")
    exporter = ConsoleSpanExporter(out=handle, formatter=lambda span: span.to_json(indent=None) + "\n")
    return configure_telemetry(traces=exporter, metrics="none"), handle


class _InteractiveReviewer:
    """Asks the person at the keyboard, naming the file of the image (stored beside the checkpoint database)."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def __call__(self, payload: dict[str, Any], item: Any) -> dict[str, Any]:
        from ..integrations._review import confidences_text

        images = ", ".join(str(i.get("ref")) for i in payload.get("images") or [])
        shown = confidences_text(payload.get("confidence") or {})
        self.console.print(f"\n[bold yellow]escalation[/]: {payload.get('question')}  (image: {images})")
        self.console.print(f"  the model saw: {payload.get('perception')!r}")
        self.console.print(f"  candidate answer: {payload.get('candidate_answer')!r}; confidence: {shown}")
        self.console.print(f"  reason: {payload.get('reason')}")
        reply = typer.prompt("  [a]pprove, [r]eject, or type the answer", default="a").strip()
        if reply.lower() in ("a", "approve") and payload.get("candidate_answer"):
            return {"type": "approve"}
        if reply.lower() in ("r", "reject"):
            return {"type": "reject"}
        return {"type": "answer", "answer": reply}
