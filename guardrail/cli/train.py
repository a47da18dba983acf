"""``guardrail train-reference``: retrain the embedded reference model from scratch, reproducibly."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from . import app
from ._outputs import check_output_folder, fail


@app.command("train-reference")
def train_reference(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder to save the model in (default: the package's own reference/model)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for data order, corruptions and init.")] = 0,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Passes over the training split (default 3).")
    ] = None,
    vision_steps: Annotated[
        int | None, typer.Option("--vision-steps", min=0, help="Stage-1 vision steps (default 6000).")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads for torch.")] = 2,
    force: Annotated[
        bool, typer.Option("--force", help="Write into --out even if it holds files (a model's are replaced).")
    ] = False,
) -> None:
    """Train the tiny LLaVA reference model on easy-VQA (about 18 minutes on 2 CPU cores) and save it.

    The output folder is checked first: one that holds files (the default, the shipped model, always does) is
    refused without --force, one that cannot be written always."""
    from ..reference import reference_model_path

    target = out if out is not None else reference_model_path()
    note = " (the default: the package's shipped reference model)" if out is None else ""
    check_output_folder(target, force=force, note=note)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..reference.train import TrainConfig
    from ..reference.train import train_reference as run

    config = TrainConfig(seed=seed, threads=threads)
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    if vision_steps is not None:
        config = dataclasses.replace(config, vision_steps=vision_steps)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        tasks = {
            "vision": bar.add_task("1/2 vision (shape, colour)", total=None, loss=float("nan")),
            "answer": bar.add_task("2/2 structured answers", total=None, loss=float("nan")),
        }
        log_lines = not bar.console.is_terminal  # a redirected run gets a plain line every 50 steps instead

        def report(stage: str, step: int, total: int, loss: float) -> None:
            bar.update(tasks[stage], completed=step, total=total, loss=loss)
            if log_lines and (step % 50 == 0 or step == total):
                typer.echo(f"{stage} step {step}/{total} loss {loss:.4f}", err=True)

        failure: OSError | None = None
        try:
            result = run(target, config, progress=report)
        except OSError as exc:  # the folder was checked first; it may still have changed, or the disk filled
            failure = exc
    if failure is not None:
        fail(f"cannot save the trained model to {target}: {failure.strerror or failure}")
    typer.echo(
        f"saved {result.path} after {result.steps} steps in {result.seconds:.0f} s "
        f"(smoothed loss {result.final_loss:.4f})"
    )


@app.command("train-verbalized")
def train_verbalized(
    out: Annotated[Path, typer.Option("--out", help="Folder to save the trained model (and its artifact) in.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed for the cold start's data and scores, and GRPO.")] = 0,
    mode: Annotated[
        str, typer.Option("--mode", help="decoupled (the paper's reward) or single (one score, the RLCR baseline).")
    ] = "decoupled",
    tar: Annotated[bool, typer.Option("--tar/--no-tar", help="Token-level advantage reweighting on vision.")] = True,
    grpo_items: Annotated[
        int | None, typer.Option("--grpo-items", min=4, help="Calibration questions GRPO learns from (default 1536).")
    ] = None,
    cold_start_examples: Annotated[
        int | None, typer.Option("--cold-start-examples", min=1, help="Cold-start questions (default 4096).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop GRPO after this many steps (default: one pass).")
    ] = None,
    calibrate: Annotated[
        int,
        typer.Option(
            "--calibrate",
            min=0,
            help="Fit the artifact on this many held-out calibration questions (0: do not; else at least 20).",
        ),
    ] = 1500,
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads for torch.")] = 2,
    force: Annotated[
        bool, typer.Option("--force", help="Write into --out even if it holds files (a model's are replaced).")
    ] = False,
) -> None:
    """Teach the reference model to write its own confidence: new tokens, a format cold start, then GRPO with the
    paper's reward and TAR (about 12 minutes on 2 CPU cores), and fit its calibration artifact.

    Every option and the output folder are checked before training starts: a folder that holds files is refused
    without --force, one that cannot be written always."""
    from ..calibration.fit import MIN_ROWS

    if mode not in ("decoupled", "single"):
        fail(f"--mode must be decoupled or single, got {mode!r}")
    if mode == "single" and tar:
        fail("TAR belongs to the decoupled reward; use --no-tar with --mode single")
    if 0 < calibrate < MIN_ROWS:
        fail(f"--calibrate {calibrate}: an artifact needs at least {MIN_ROWS} questions (or 0: fit none)")
    check_output_folder(out, force=force)

    import sys

    from rich.console import Console

    from .._paths import recorded_command
    from ..calibration.artifact import save_artifact
    from ..errors import GuardrailError
    from ..pretrained import ARTIFACT_FILENAME, calibrate_model
    from ..reference.verbalized import VerbalizedConfig, artifact_items, train_verbalized_reference

    console = Console(stderr=True)
    config = VerbalizedConfig(seed=seed, mode=mode, tar=tar, threads=threads)
    if grpo_items is not None:
        config = dataclasses.replace(config, grpo_items=grpo_items)
    if cold_start_examples is not None:
        config = dataclasses.replace(
            config, cold_start=dataclasses.replace(config.cold_start, examples=cold_start_examples)
        )
    if max_steps is not None:
        config = dataclasses.replace(config, grpo={"max_steps": max_steps})
    failure: Exception | None = None
    with console.status("cold start, then GRPO (TRL logs its progress)"):
        try:
            path = train_verbalized_reference(out, config)
        except OSError as exc:  # the folder was checked first; it may still have changed, or the disk filled
            failure = exc
    if failure is not None:
        fail(f"cannot save the trained model to {out}: {getattr(failure, 'strerror', None) or failure}")
    console.print(f"[bold]trained[/] {path}")
    artifact_path = path / ARTIFACT_FILENAME
    if not calibrate:
        artifact_path.unlink(missing_ok=True)  # --force over an earlier model: its artifact belongs to that one
        return
    with console.status(f"fitting the calibration artifact on {calibrate} held-out calibration questions"):
        try:
            artifact, rows = calibrate_model(
                path,
                artifact_items(calibrate, seed=seed, grpo_half=config.grpo_half),
                data_name=f"easy-vqa:calibration:not-grpo-half:n={calibrate}:seed={seed}",
                command=recorded_command(["guardrail", *sys.argv[1:]]),
                seed=seed,
            )
            saved = save_artifact(artifact, artifact_path)
        except (GuardrailError, OSError) as exc:
            failure = exc
    if failure is not None:
        artifact_path.unlink(missing_ok=True)  # an earlier model's artifact would not fit this one
        fail(
            f"{failure}; the trained model is saved in {path} without an artifact (fit one with `guardrail "
            f"calibrate --model {path} --out {artifact_path}`)"
        )
    console.print(f"[bold]calibrated[/] on {len(rows)} answers; artifact written to {saved}")
