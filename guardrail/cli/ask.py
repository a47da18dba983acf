"""``guardrail ask IMAGE QUESTION``: one guarded answer, with its decoupled confidence and the policy decision.

``--batch FILE.jsonl`` answers many questions with the model loaded once: one JSON line out per line in, in order;
a bad line (not a JSON object with a string "image" and "question", or with any other key), an image that cannot be
used (not a regular image file, over the byte limit, not decodable: nothing is read unbounded and nothing blocks)
or a question longer than the model takes becomes an error record for that line (``"status": "error"``) and the
rest go on. Up to ``--batch-size`` lines (16) are guarded together (``Guard.run_batch``: each decided as alone, the
model calls batched). A summary line goes to stderr at the end, naming what each abstention and escalation came
from, with its count (``abstained [180 time-budget, 90 perception-doubt]``: see :func:`decision_cause`).

Exit codes: 0 answered (whatever the decision); 1 in batch mode, some line failed; 2 bad usage or bad input
(image, policy, model, artifact, an unreadable batch file: reported before the model loads; a question too long for
the model, once it is loaded); 130 / 143 stopped by SIGINT / SIGTERM (the current chunk of lines is finished first,
every line written is complete).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import app
from ._interrupt import Interrupted, StopFlag

if TYPE_CHECKING:
    from ..types import Request

__all__ = ["ask", "decision_cause", "result_record"]


def result_record(result: Any) -> dict[str, Any]:
    """The JSON shape of one answer: ``answer`` only when accepted, plus what the model said and why."""
    from ..responses import parse_response
    from ..types import COMPONENTS

    final = result.attempts[-1] if result.attempts else None
    generation = final.generation if final is not None else None
    parsed = None if generation is None else parse_response(generation.text)
    model_answer = None if parsed is None else (parsed.answer_text or parsed.text.strip())
    confidence = result.confidence
    decision = result.final_decision
    return {
        "status": result.status,
        "answer": result.answer,
        "model_answer": model_answer,
        "perception": None if parsed is None else parsed.perception_text,
        "confidence": {name: None if confidence is None else confidence.get(name) for name in COMPONENTS},
        "calibrated": result.calibrated,
        "decision": {"action": decision.action.value, "rule": decision.rule, "reason": decision.reason},
        "attempts": len(result.attempts),
        "error": None if result.error is None else result.error.model_dump(),
        "seconds": round(result.seconds, 4),
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:.2g}" if 0.0 < value < 0.001 else f"{value:.3f}"  # a tiny familiarity must not read 0.000


def _print_human(record: dict[str, Any], *, policy: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..types import COMPONENTS

    console = Console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    shown = record["answer"] if record["answer"] is not None else f"(withheld: {record['status']})"
    table.add_row("answer", shown)
    if record["answer"] is None and record["model_answer"] is not None:
        table.add_row("model said", record["model_answer"])
    table.add_row("perception", record["perception"] or "")
    for part in COMPONENTS:
        label = part if part in ("familiarity", "stability") else f"{part} confidence"  # not probabilities
        table.add_row(label, _fmt(record["confidence"][part]))
    if record["calibrated"] is False:
        table.add_row("calibrated", "no: raw scores, not probabilities (the model has no calibration)")
    decision = record["decision"]
    table.add_row("decision", f"{decision['action']} ({decision['rule']} of policy {policy!r}): {decision['reason']}")
    table.add_row("attempts", f"{record['attempts']} in {record['seconds']:.2f} s")
    if record["error"] is not None:
        table.add_row("error", f"{record['error']['stage']}: {record['error']['type']}: {record['error']['message']}")
    console.print(table)


def _request(image: Path, question: str) -> Any:
    from ..images import decode_image
    from ..types import ImageBlock, Request

    block = ImageBlock.from_path(image)  # read once: a regular file only, bounded, never blocking
    decode_image(block, name=str(image))  # decode once up front: a bad image is an input error, not a model failure
    return Request.from_question(question, [block])


@app.command()
def ask(
    image: Annotated[Path | None, typer.Argument(help="Image file to ask about.", show_default=False)] = None,
    question: Annotated[str | None, typer.Argument(help="The question.", show_default=False)] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model folder (transformers format). Default: the shipped reference model.")
    ] = None,
    policy: Annotated[str, typer.Option(help="Policy file or built-in name.")] = "default",
    artifact: Annotated[
        Path | None, typer.Option(help="Calibration artifact. Default: the model folder's guardrail_calibration.json.")
    ] = None,
    uncalibrated: Annotated[
        bool, typer.Option("--uncalibrated/--calibrated", help="Ignore any calibration artifact (raw scores).")
    ] = False,
    no_uncalibrated: Annotated[bool, typer.Option("--no-uncalibrated", hidden=True)] = False,  # old: --calibrated
    accept_uncalibrated: Annotated[
        bool,
        typer.Option(
            "--accept-uncalibrated",
            help="Without a calibration, let the policy decide on raw scores (default: no answer is accepted).",
        ),
    ] = False,
    draws: Annotated[
        int | None, typer.Option(min=1, help="K image perturbations averaged (default: as calibrated, else 1).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    batch: Annotated[
        Path | None, typer.Option(help='JSONL file of {"image": path, "question": text} lines; one JSON line out each.')
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(min=1, help="With --batch: lines guarded together, their model calls batched (1: one by one)."),
    ] = 16,
) -> None:
    """Answer QUESTION about IMAGE through the guard; print the answer, perception, confidences and decision."""
    from ._interrupt import stop_on_signals

    if no_uncalibrated:
        typer.echo("note: --no-uncalibrated is deprecated; use --calibrated (the default)", err=True)
    with stop_on_signals() as stop:
        calibration = (artifact, uncalibrated, accept_uncalibrated)
        _ask(image, question, model, policy, calibration, draws, as_json, batch, batch_size, stop)


def _ask(
    image: Path | None,
    question: str | None,
    model: Path | None,
    policy: str,
    calibration: tuple[Path | None, bool, bool],
    draws: int | None,
    as_json: bool,
    batch: Path | None,
    batch_size: int,
    stop: StopFlag,
) -> None:
    from ..errors import GuardrailError
    from ..pretrained import model_path
    from ._calibration import load_guard_telling_calibration

    artifact, uncalibrated, accept_uncalibrated = calibration
    if batch is None and (image is None or question is None):
        _fail("give IMAGE and QUESTION, or --batch FILE.jsonl")
    if batch is not None and (image is not None or question is not None):
        _fail("give either IMAGE QUESTION or --batch FILE.jsonl, not both")
    lines: list[str] = []
    if batch is None:
        assert image is not None
        assert question is not None
        try:
            request = _request(image, question)
        except (GuardrailError, OSError) as exc:
            _fail(str(exc))
    else:
        try:
            lines = batch.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"{batch}: cannot be read ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})")
    try:
        guard = load_guard_telling_calibration(
            model_path(model),
            opt_in="--accept-uncalibrated",
            artifact=None if uncalibrated else (artifact or "auto"),
            policy=policy,
            draws=draws,
            allow_uncalibrated=accept_uncalibrated,
        )
    except (GuardrailError, OSError) as exc:
        _fail(str(exc))
    if batch is not None:
        _run_batch(guard, batch, lines, batch_size, stop)
        return
    try:
        _check(guard, request)
    except GuardrailError as exc:
        _fail(str(exc))
    try:
        stop.check()
        record = result_record(guard.run(request))
        stop.check()
    except Interrupted as interrupted:
        typer.echo(f"interrupted by {interrupted.name}: no answer printed", err=True)
        raise typer.Exit(interrupted.exit_code) from None
    if as_json:
        typer.echo(json.dumps(record))
    else:
        _print_human(record, policy=guard.policy.name)


def decision_cause(record: dict[str, Any]) -> str:
    """What a withheld answer came from, read from its record (:func:`result_record`): ``time-budget`` (an attempt
    cut off by the time budget, or no time left for the next one), ``attempts-spent`` (a remedy the attempt budget
    left no room for), ``<stage>-error`` (a failure of that stage, e.g. ``backend-error``), ``uncalibrated`` (a guard
    without a calibration, whose policy does not accept raw scores), else the name of the policy rule that decided
    (``unfamiliar-input``; ``rules[2]`` for an unnamed one, ``otherwise``)."""
    error, decision = record.get("error"), record["decision"]
    if error is not None and error["stage"] == "budget":
        return "time-budget"
    if error is not None:
        return f"{error['stage']}-error"
    rule = str(decision["rule"])
    if rule == "on_uncalibrated":
        return "uncalibrated"
    if rule == "on_exhausted":
        # The guard's reason when the deadline passed between attempts (loop.py: "time budget of 30 s spent").
        return "time-budget" if str(decision["reason"]).startswith("time budget") else "attempts-spent"
    return rule.split(" ", 1)[1] if rule.startswith("rules[") and " " in rule else rule


@dataclass
class _Tally:
    """What a batch has done so far, for its summary line."""

    lines: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    causes: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.statuses["error"]

    def add(self, record: dict[str, Any]) -> None:
        """Count one written record: its status and, for a withheld answer, its cause."""
        self.lines += 1
        self.statuses[record["status"]] += 1
        if record["status"] in ("abstained", "escalated"):
            self.causes.setdefault(record["status"], Counter())[decision_cause(record)] += 1

    def summary(self) -> str:
        """``3 answered (1 accepted, 2 abstained [1 time-budget, 1 unfamiliar-input], 0 escalated), 0 failed``."""
        answered = self.lines - self.failed
        parts = ", ".join(self._part(status) for status in ("accepted", "abstained", "escalated"))
        return f"{answered} answered ({parts}), {self.failed} failed"

    def _part(self, status: str) -> str:
        causes = self.causes.get(status)
        if not causes:
            return f"{self.statuses[status]} {status}"
        named = ", ".join(f"{count} {cause}" for cause, count in sorted(causes.items(), key=lambda c: (-c[1], c[0])))
        return f"{self.statuses[status]} {status} [{named}]"


def _run_batch(guard: Any, batch: Path, lines: list[str], batch_size: int, stop: StopFlag) -> None:
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    tally = _Tally()
    try:
        for start in range(0, len(numbered), batch_size):
            stop.check()  # between chunks: every line of a chunk is guarded and written, or none is
            for record in _guarded_chunk(guard, batch, numbered[start : start + batch_size], batch_size):
                typer.echo(json.dumps(record))
                sys.stdout.flush()  # each line whole, at once: a reader (or a stop) never sees half a record
                tally.add(record)
    except Interrupted as interrupted:
        typer.echo(
            f"interrupted by {interrupted.name} after {tally.lines} of {len(numbered)} lines: {tally.summary()}; "
            "every line written is complete",
            err=True,
        )
        raise typer.Exit(interrupted.exit_code) from None
    typer.echo(f"{batch}: {tally.lines} lines: {tally.summary()}", err=True)
    if tally.failed:
        raise typer.Exit(1)


def _guarded_chunk(guard: Any, batch: Path, chunk: list[tuple[int, str]], batch_size: int) -> list[dict[str, Any]]:
    """The output records of ``chunk``'s lines, in order: the readable ones guarded together (``run_batch``), the
    others an error record naming the line."""
    from ..errors import GuardrailError

    records: dict[int, dict[str, Any]] = {}
    requests: dict[int, Request] = {}
    for number, line in chunk:
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("image"), str):
                raise ValueError('expected an object with "image" (a path) and "question" (text)')
            if not isinstance(item.get("question"), str):
                raise ValueError('expected an object with "image" (a path) and "question" (text)')
            unknown = sorted(set(item) - _KEYS)
            if unknown:  # never dropped unread: "images": [...] would have been asked about without its images
                raise ValueError(
                    f"unknown key(s) {', '.join(map(json.dumps, unknown))}: a line has only "
                    '"image" (one path) and "question" (text)'
                )
            image_path = Path(item["image"])
            if not image_path.is_absolute():
                image_path = batch.parent / image_path
            request = _request(image_path, item["question"])
            _check(guard, request)  # too long for the model: this line's error, before it is batched with others
            requests[number] = request
        except (GuardrailError, OSError, ValueError) as exc:
            records[number] = {
                "line": number,
                "status": "error",
                "error": {"stage": "input", "type": type(exc).__name__, "message": f"{batch}:{number}: {exc}"},
            }
    results = guard.run_batch(list(requests.values()), batch_size=batch_size) if requests else []
    for number, result in zip(requests, results, strict=True):
        records[number] = {"line": number, **result_record(result)}
    return [records[number] for number, _ in chunk]


_KEYS = frozenset({"image", "question"})
"""The keys of an ``ask --batch`` line; any other is refused (an error record naming it), never ignored."""


def _check(guard: Any, request: Request) -> None:
    """``InputError`` when the guard's model cannot take ``request`` (a question longer than its positions)."""
    from ..backends.base import CheckingBackend

    if isinstance(guard.backend, CheckingBackend):
        guard.backend.check_request(request)


def _fail(message: str) -> Any:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
