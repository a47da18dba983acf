"""``guardrail train verbalized``: teach the reference model to write its own confidence, and fit its artifact."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ._outputs import check_output_folder, fail
from .train import deprecated_alias, refuse_package_folder, train_app

__all__ = ["train_verbalized"]


@train_app.command("verbalized")
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
    visual_target: Annotated[
        str,
        typer.Option(
            "--visual-target", help="batch (METHOD.md section 8) or guard (the shipped artifact's visual confidence)."
        ),
    ] = "batch",
    own_advantage: Annotated[
        bool,
        typer.Option(
            "--own-advantage/--no-own-advantage", help="Confidence tokens get the calibration terms' advantage."
        ),
    ] = False,
    ranking: Annotated[
        bool, typer.Option("--ranking/--no-ranking", help="Within-group ranking term (right above wrong).")
    ] = False,
    pairs: Annotated[bool, typer.Option("--pairs/--no-pairs", help="Clean/damaged image pairs in each group.")] = False,
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
    if visual_target not in ("batch", "guard"):
        fail(f"--visual-target must be batch or guard, got {visual_target!r}")
    if mode == "single" and (visual_target == "guard" or pairs):
        fail("--visual-target guard and --pairs train the visual score of the decoupled reward; not with --mode single")
    if 0 < calibrate < MIN_ROWS:
        fail(f"--calibrate {calibrate}: an artifact needs at least {MIN_ROWS} questions (or 0: fit none)")
    refuse_package_folder(out, force=force)
    check_output_folder(out, force=force)

    import sys

    from rich.console import Console

    from .._paths import recorded_command
    from ..calibration.artifact import save_artifact
    from ..errors import GuardrailError
    from ..pretrained import ARTIFACT_FILENAME, calibrate_model
    from ..reference.verbalized import VerbalizedConfig, artifact_items, train_verbalized_reference

    console = Console(stderr=True)
    config = VerbalizedConfig(
        seed=seed,
        mode=mode,
        tar=tar,
        threads=threads,
        visual_target=visual_target,
        own_advantage=own_advantage,
        ranking=ranking,
        pairs=pairs,
    )
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


deprecated_alias("train-verbalized", "train verbalized", train_verbalized)
