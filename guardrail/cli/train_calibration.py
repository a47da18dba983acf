"""``guardrail train-calibration``: GRPO with the paper's reward and TAR (METHOD.md section 8), on TRL.

A run is a YAML file (``guardrail.training.TrainCalibrationConfig``: model, data, output, calibration options,
TRL's ``GRPOConfig`` fields under ``grpo``, peft's ``LoraConfig`` under ``lora``); the options below override
its keys, or describe a whole run without a file. Several GPUs: ``accelerate launch --num_processes N
$(which guardrail) train-calibration --config run.yaml``. Needs the ``train`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import app

__all__ = ["train_calibration"]


@app.command("train-calibration")
def train_calibration(
    config: Annotated[Path | None, typer.Option(help="YAML run description (see the module docstring).")] = None,
    model: Annotated[str | None, typer.Option(help="Model folder (or name in a local hub cache).")] = None,
    data: Annotated[
        str | None, typer.Option(help="Labelled JSONL file, or easyvqa:SPLIT (easyvqa:SPLIT:clean: no corruptions).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (the trained model, or its LoRA adapter).")] = None,
    mode: Annotated[str | None, typer.Option(help="decoupled (the paper's reward) or single (one score).")] = None,
    tar: Annotated[bool | None, typer.Option("--tar/--no-tar", help="Token-level advantage reweighting.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only this many labelled items.")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="GRPO steps (overrides grpo.max_steps).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of data, sampling and perturbations.")] = None,
) -> None:
    """Train a model to write calibrated <vision_confidence> and <reasoning_confidence> (GRPO + TAR)."""
    from ..errors import InputError
    from ..training.train import TrainCalibrationConfig, load_config
    from ..training.train import train_calibration as run

    overrides = {"model": model, "data": data, "output": out, "mode": mode, "tar": tar, "limit": limit, "seed": seed}
    try:
        if config is not None:
            run_config = load_config(config, **overrides)
        else:
            missing = [f"--{k}" for k, v in (("model", model), ("data", data), ("out", out)) if v is None]
            if missing:
                raise InputError(f"without --config, give {', '.join(missing)}")
            run_config = TrainCalibrationConfig(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        if max_steps is not None:
            run_config = TrainCalibrationConfig(
                **{**run_config.__dict__, "grpo": {**dict(run_config.grpo), "max_steps": max_steps}}
            )
        run_config.options()  # checks the calibration options before anything loads
    except ImportError as exc:
        typer.echo(f"error: {exc}; install the training extra: pip install 'lvlm-guardrail[train]'", err=True)
        raise typer.Exit(2) from None
    except (InputError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    saved = run(run_config)
    typer.echo(f"saved to {saved}")
