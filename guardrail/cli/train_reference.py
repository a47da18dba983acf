"""``guardrail train reference``: retrain the embedded reference model from scratch, reproducibly.

``--out`` has no default: the run used to write into the package's own shipped model folder when it was left out,
so a bare run replaced the shipped files. A folder inside the installed package is refused unless ``--force``
(:func:`.train.refuse_package_folder`; maintainers refreshing the shipped model give both).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ._outputs import check_output_folder, check_world, fail
from .train import deprecated_alias, refuse_package_folder, train_app

__all__ = ["train_reference"]


@train_app.command("reference")
def train_reference(
    out: Annotated[Path, typer.Option("--out", help="Folder to save the model in (a new or empty one).")],
    seed: Annotated[int, typer.Option("--seed", help="Seed for data order, corruptions and init.")] = 0,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Passes over the training split (default 3).")
    ] = None,
    vision_steps: Annotated[
        int | None, typer.Option("--vision-steps", min=0, help="Stage-1 vision steps (default 6000).")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads for torch.")] = 2,
    world: Annotated[
        str,
        typer.Option(
            "--world",
            help="easy-vqa (the shipped reference model) or scenes (2-5 small shapes on 256x256; "
            "experimental: no scenes model good enough to ship yet).",
        ),
    ] = "easy-vqa",
    force: Annotated[
        bool, typer.Option("--force", help="Write into --out even if it holds files (a model's are replaced).")
    ] = False,
) -> None:
    """Train the tiny LLaVA reference model on easy-VQA (about 18 minutes on 2 CPU cores) and save it.

    The output folder is checked first: one that holds files, or one inside the installed package (the shipped
    model's), is refused without --force; one that cannot be written always."""
    check_world(world)
    refuse_package_folder(out, force=force)
    check_output_folder(out, force=force)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..reference.scenes import ScenesTrainConfig, train_scenes
    from ..reference.supervised import TrainConfig
    from ..reference.supervised import train_reference as run_reference

    config: TrainConfig | ScenesTrainConfig = TrainConfig(seed=seed, threads=threads)
    if world == "scenes":
        config = ScenesTrainConfig(seed=seed, threads=threads)
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
            if isinstance(config, ScenesTrainConfig):
                result = train_scenes(out, config, progress=report)
            else:
                result = run_reference(out, config, progress=report)
        except OSError as exc:  # the folder was checked first; it may still have changed, or the disk filled
            failure = exc
    if failure is not None:
        fail(f"cannot save the trained model to {out}: {failure.strerror or failure}")
    typer.echo(
        f"saved {result.path} after {result.steps} steps in {result.seconds:.0f} s "
        f"(smoothed loss {result.final_loss:.4f})"
    )


deprecated_alias("train-reference", "train reference", train_reference)
