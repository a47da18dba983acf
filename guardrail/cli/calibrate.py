"""``guardrail calibrate``: fit a model's calibration artifact on labelled data, with progress bars.

Defaults: the shipped reference model on easy-VQA's calibration split under graded corruptions. ``--model DIR``
and ``--data FILE.jsonl`` (lines {"image", "question", "answer", optional "perception"}) calibrate your own.
``--base-url URL --model NAME`` calibrates a served or hosted model (any OpenAI-compatible chat API) on its
black-box signals (``calibration.pipeline.calibrate_served``), the API key read from ``$OPENAI_API_KEY`` or the
variable ``--api-key-env`` names; the artifact is bound to that model id.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from . import app
from ._interrupt import Interrupted, StopFlag, stop_on_signals
from ._outputs import check_output_file, check_world, fail

__all__ = ["calibrate"]


@app.command()
def calibrate(
    out: Annotated[Path, typer.Option(help="Where to write the artifact (JSON).")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Model folder (default: the shipped reference model); with --base-url, the served model's id."
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Calibrate a served model behind this OpenAI-compatible URL (ending in /v1) on its black-box "
            "signals: percept agreement under re-queries on changed images, token log-probs or re-asks."
        ),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="With --base-url: the environment variable holding the API key. Default: OPENAI_API_KEY."),
    ] = None,
    logprobs: Annotated[
        bool | None,
        typer.Option(
            "--logprobs/--no-logprobs",
            help="With --base-url: reasoning from the answer's token log-probs (default), or, for an API that "
            "returns none, from K sampled re-asks.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="With --base-url: questions measured at once (default 8).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Labelled JSONL file. Default: the --world's questions.")] = None,
    world: Annotated[
        str, typer.Option(help="Built-in questions when --data is not given: easy-vqa or scenes.")
    ] = "easy-vqa",
    split: Annotated[str, typer.Option(help="Split of the built-in questions (without --data).")] = "calibration",
    limit: Annotated[int, typer.Option(min=20, help="Built-in questions to use (a seeded sample).")] = 3000,
    clean: Annotated[
        bool, typer.Option("--clean/--corrupted", help="Built-in questions without corruptions, or with them.")
    ] = False,
    no_clean: Annotated[bool, typer.Option("--no-clean", hidden=True)] = False,  # old spelling of --corrupted
    draws: Annotated[
        int | None,
        typer.Option(
            min=1, help="K image perturbations averaged (default 1); with --base-url, K perturbed re-queries (4)."
        ),
    ] = None,
    perturbation: Annotated[
        str,
        typer.Option(
            help="auto (choose on the data, the paper's blackout unless another ranks perception errors better), "
            "blackout, noise, grey or blur; with --base-url, how re-queried images change: auto = stability "
            "(small colour, rotation, shift and noise changes that keep the scene), or a perturbation above."
        ),
    ] = "auto",
    blackout_probability: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Chance a patch is blackened (--perturbation blackout; default 0.8, with --base-url 0.25).",
        ),
    ] = None,
    calibrator: Annotated[
        str,
        typer.Option(help="Per-component calibrator: isotonic (large sets), platt (small), histogram, temperature."),
    ] = "isotonic",
    combiner: Annotated[str, typer.Option(help="How overall is formed from the calibrated parts.")] = "platt_harmonic",
    seed: Annotated[int, typer.Option(help="Seed of sampling, corruptions and the fit/certify split.")] = 0,
    question_noise: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Also score garbled-question copies of this fraction of the items, so that confidence learns to "
            "fall on questions the model may not understand (0: none).",
        ),
    ] = 0.25,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Questions answered in one batched generation (1: one by one).")
    ] = 16,
    stability: Annotated[
        str,
        typer.Option(
            help="The stability probe (the answer scored under views of the image that must not change it): auto "
            "(choose family, count and weight on the data; off unless it ranks perception errors better) or off.",
        ),
    ] = "auto",
    remeasure: Annotated[
        Path | None,
        typer.Option(
            help="Do not score: measure this artifact's metrics again on its own held-out scores (after a metric's "
            "definition changed) and write it to --out. Calibrators and thresholds stay as fitted.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Score labelled questions with the model, fit the decoupled calibrator, certify thresholds, save.

    Refused before the model loads: an --out that exists (without --force) or cannot be written, and fewer than 20
    labelled items. Refused once the answers are scored, before fitting: data a calibrator cannot learn from (a
    component with fewer than 10 labelled rows in the half it is fitted on, or with right or wrong answers only).
    SIGINT / SIGTERM stop after the current question (exit 130 / 143) and write no artifact.
    """
    if no_clean:
        typer.echo("note: --no-clean is deprecated; use --corrupted (the default)", err=True)
    served = _served_options(base_url, model, api_key_env, logprobs, concurrency, remeasure, perturbation)
    check_output_file(out, force=force)
    if remeasure is not None:
        _remeasure(remeasure, out)
        return
    with stop_on_signals() as stop:
        try:
            if served is not None:
                setting = served.setting(draws, perturbation, blackout_probability)
                _calibrate_served(out, served, setting, data, world, split, limit, clean, calibrator, combiner, seed,
                                  stop)  # fmt: skip
                return
            _calibrate(
                out, Path(model) if model is not None else None, data, world, split, limit, clean, draws or 1,
                perturbation, 0.8 if blackout_probability is None else blackout_probability, calibrator,
                combiner, seed, question_noise, batch_size, stability, stop,
            )  # fmt: skip
        except Interrupted as interrupted:
            typer.echo(
                f"interrupted by {interrupted.name} after scoring {stop.done} items; no artifact written", err=True
            )
            raise typer.Exit(interrupted.exit_code) from None


def _remeasure(source: Path, out: Path) -> None:
    from .._paths import recorded_command
    from .._version import __version__
    from ..calibration.artifact import load_artifact, save_artifact
    from ..calibration.fit import remeasure_metrics
    from ..errors import GuardrailError

    try:
        artifact = load_artifact(source)
        note = {"command": recorded_command(["guardrail", *sys.argv[1:]]), "guardrail_version": __version__}
        again = remeasure_metrics(artifact, note=note)
        path = save_artifact(again, out)
    except (GuardrailError, OSError) as exc:
        fail(str(exc))
    for name, new in again.metrics.items():
        old = artifact.metrics.get(name)
        before = "" if old is None else f"{old.ece_10:.4f} -> "
        aurc = "" if old is None else f"{old.aurc:.4f} -> "
        typer.echo(f"{name}: ECE10 {before}{new.ece_10:.4f}, AURC {aurc}{new.aurc:.4f}, E-AURC {new.eaurc:.4f}")
    typer.echo(f"metrics measured again on the held-out scores; artifact written to {path}")


def _calibrate(
    out: Path,
    model: Path | None,
    data: Path | None,
    world: str,
    split: str,
    limit: int,
    clean: bool,
    draws: int,
    perturbation: str,
    blackout_probability: float,
    calibrator: str,
    combiner: str,
    seed: int,
    question_noise: float,
    batch_size: int,
    stability: str,
    stop: StopFlag,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .._paths import recorded_command
    from ..calibration.artifact import save_artifact
    from ..errors import GuardrailError
    from ..pretrained import calibrate_model, model_path

    console = Console(stderr=True)
    try:
        model_dir = model_path(model)
    except GuardrailError as exc:
        fail(str(exc))
    if not (model_dir / "config.json").is_file():
        fail(f"--model {model_dir}: not a model folder (no config.json)")
    items, data_name = _items(data, world, split, limit, clean, seed, console)
    columns: list[Any] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("scoring", total=len(items) + round(question_noise * len(items)))
        probe_task = None

        def advance(_: object) -> None:
            stop.done += 1
            progress.advance(task)
            stop.check()  # between items: a stop asked for during this one ends the run here

        def probe_advance(_: object) -> None:
            nonlocal probe_task
            if probe_task is None:
                probe_task = progress.add_task("choosing the visual and stability probes", total=None)
            progress.advance(probe_task)
            stop.check()

        failure: Exception | None = None
        try:
            artifact, rows = calibrate_model(
                model_dir,
                items,
                draws=draws,
                perturbation=perturbation,
                blackout_probability=blackout_probability,
                combiner=combiner,
                part_calibrator=calibrator,
                seed=seed,
                data_name=data_name,
                question_noise=question_noise,
                batch_size=batch_size,
                stability=stability,
                command=recorded_command(["guardrail", *sys.argv[1:]]),
                on_item=advance,
                on_probe_item=probe_advance,
            )
        except (GuardrailError, OSError) as exc:
            failure = exc
    if failure is not None:  # said once the progress bars are drawn for the last time, as the last line
        fail(str(failure))
    try:
        path = save_artifact(artifact, out)
    except GuardrailError as exc:
        fail(str(exc))
    summary = {name: metrics.ece_10 for name, metrics in artifact.metrics.items()}
    shown = ", ".join(f"{name} ECE10 {value:.3f}" for name, value in summary.items())
    choice = artifact.info.get("perturbation_choice")
    if choice:
        table = [(v, k) for k, v in choice["auroc_perception"].items() if v is not None]
        best = ", ".join(f"{k} {v:.3f}" for v, k in sorted(table, key=lambda t: -t[0])[:5])
        console.print(
            f"visual probe: [bold]{choice['chosen']}[/] ({choice['reason']}; best of {len(table)}: {best}; "
            "the whole table is in the artifact)"
        )
    steady = artifact.info.get("stability_choice")
    if steady:
        console.print(f"stability probe: [bold]{steady['chosen']}[/] l={steady['weight']:g} ({steady['reason']})")
    console.print(f"[bold]calibrated[/] on {len(rows)} answers ({shown}); artifact written to {path}")


def _items(
    data: Path | None, world: str, split: str, limit: int, clean: bool, seed: int, console: Any
) -> tuple[list[Any], str]:
    """The labelled items (``--data``, else the ``--world``'s split) and the name the artifact records for them."""
    from .._paths import recorded_path
    from ..calibration.pipeline import check_item_count
    from ..data.labelled import easyvqa_items, read_jsonl, scenes_items
    from ..errors import GuardrailError

    try:
        if data is not None:
            items = read_jsonl(data)
            check_item_count(len(items), where=str(data))
            return items, recorded_path(data)
        check_world(world)
        with console.status(f"preparing {world} {split} questions"):
            load = scenes_items if world == "scenes" else easyvqa_items
            items = load(split, limit=limit, corruptions=() if clean else None, seed=seed)
    except GuardrailError as exc:
        fail(str(exc))
    return items, f"{world}:{split}:{'clean' if clean else 'corrupted'}:n={len(items)}:seed={seed}"


@dataclass(frozen=True)
class _Served:
    """The served model a black-box calibration asks: where, which, with what key, and how it measures."""

    base_url: str
    model: str
    api_key: str | None
    logprobs: bool
    concurrency: int

    def setting(self, draws: int | None, perturbation: str, probability: float | None) -> Any:
        """The black-box estimator's setting from the options (a bad value: the one-line refusal)."""
        from ..confidence.settings import BlackBoxSetting

        try:
            return BlackBoxSetting(
                draws=draws or 4,
                perturbation="stability" if perturbation == "auto" else perturbation,
                **({} if probability is None else {"probability": probability}),
                logprobs=self.logprobs,
                reask_draws=0 if self.logprobs else draws or 4,
            )
        except ValueError as exc:
            fail(f"--draws/--perturbation/--blackout-probability: {exc}")


def _served_options(
    base_url: str | None,
    model: str | None,
    api_key_env: str | None,
    logprobs: bool | None,
    concurrency: int | None,
    remeasure: Path | None,
    perturbation: str,
) -> _Served | None:
    """The served model of ``--base-url`` (``None`` without it), or the one-line refusal of options that do not
    go together, before anything is read or asked."""
    if base_url is None:
        given = [name for name, value in (("--api-key-env", api_key_env), ("--concurrency", concurrency)) if value]
        given += ["--logprobs/--no-logprobs"] if logprobs is not None else []
        if given:
            fail(f"{', '.join(given)} only apply to a served model: give --base-url URL --model NAME too")
        return None
    if not base_url.startswith(("http://", "https://")):
        fail(f"--base-url {base_url!r}: expected an http:// or https:// URL of an OpenAI-compatible API (…/v1)")
    if not model or not model.strip():
        fail("--base-url needs --model NAME: the served model's id (e.g. --model gpt-4o)")
    if remeasure is not None:
        fail("--remeasure re-reads an artifact's own scores; it asks no model: leave out --base-url")
    if perturbation not in ("auto", "stability", "blackout", "noise", "grey", "blur"):
        fail(f"--perturbation {perturbation!r}: expected auto, stability, blackout, noise, grey or blur")
    variable = api_key_env or "OPENAI_API_KEY"
    key = os.environ.get(variable)
    if api_key_env is not None and not key:
        fail(f"--api-key-env {api_key_env}: no such environment variable is set (or it is empty)")
    return _Served(
        base_url=base_url.rstrip("/"),
        model=model.strip(),
        api_key=key or None,
        logprobs=True if logprobs is None else logprobs,
        concurrency=concurrency or 8,
    )


def _calibrate_served(
    out: Path,
    served: _Served,
    setting: Any,
    data: Path | None,
    world: str,
    split: str,
    limit: int,
    clean: bool,
    calibrator: str,
    combiner: str,
    seed: int,
    stop: StopFlag,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .._paths import recorded_command
    from ..calibration.artifact import save_artifact
    from ..calibration.pipeline import calibrate_served
    from ..errors import GuardrailError

    console = Console(stderr=True)
    items, data_name = _items(data, world, split, limit, clean, seed, console)
    try:
        from ..backends.openai import OpenAICompatibleBackend

        backend = OpenAICompatibleBackend(
            served.base_url, served.model, api_key=served.api_key, scoring="off", logprobs=setting.logprobs
        )
    except (ImportError, ValueError) as exc:
        fail(str(exc))
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    failure: Exception | None = None
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"measuring {served.model} ({setting.label})", total=len(items))

        def advance(_: object) -> None:
            stop.done += 1
            progress.advance(task)
            stop.check()

        try:
            artifact, rows = calibrate_served(
                backend,
                items,
                model=served.model,
                base_url=served.base_url,
                setting=setting,
                combiner=combiner,
                part_calibrator=calibrator,
                seed=seed,
                data_name=data_name,
                concurrency=served.concurrency,
                on_item=advance,
                command=recorded_command(["guardrail", *sys.argv[1:]]),
            )
        except (GuardrailError, OSError) as exc:
            failure = exc
        finally:
            backend.close()
    if failure is not None:
        fail(str(failure))
    try:
        path = save_artifact(artifact, out)
    except GuardrailError as exc:
        fail(str(exc))
    shown = ", ".join(f"{name} ECE10 {m.ece_10:.3f}" for name, m in artifact.metrics.items())
    console.print(
        f"[bold]calibrated[/] {served.model} on {len(rows)} black-box answers ({setting.label}, "
        f"{setting.requests_per_call} requests per call; {shown}); artifact written to {path}"
    )
