"""``guardrail train grpo``: GRPO with the paper's reward and TAR (METHOD.md section 8), on TRL.

A run is a YAML file (``guardrail.training.GRPORunConfig``: model, data, output, calibration options,
TRL's ``GRPOConfig`` fields under ``grpo``, peft's ``LoraConfig`` under ``lora``); the options below override
its keys, or describe a whole run without a file. Several GPUs: ``accelerate launch --num_processes N
$(which guardrail) train grpo --config run.yaml``. Needs the ``train`` extra.

Before any model loads, the run is checked: the calibration options, the data (a readable JSONL file, or
``easyvqa:SPLIT`` of an existing split), a model folder given as a path, and the output folder (refused when it
holds files or lies inside the installed package, unless ``--force``, or when it cannot be written), and so are
the options TRL is given (``GRPORunConfig.grpo_config``): on a machine without a GPU that supports bf16 the run
trains in float32 by itself, and a ``bf16`` / ``fp16`` the machine cannot run is named. A problem is one line and
exit code 2. (Formerly ``guardrail train-calibration``, which still runs, hidden, for one release.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._outputs import check_output_folder, fail
from .train import deprecated_alias, refuse_package_folder, train_app

__all__ = ["train_grpo"]


@train_app.command("grpo")
def train_grpo(
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
    visual_target: Annotated[
        str | None,
        typer.Option(
            help="batch (METHOD.md section 8: batch-z-scored) or guard (the --target-artifact's calibration)."
        ),
    ] = None,
    target_artifact: Annotated[
        str | None,
        typer.Option(help="Calibration artifact whose visual confidence is the target (visual_target guard)."),
    ] = None,
    own_advantage: Annotated[
        bool | None,
        typer.Option(
            "--own-advantage/--no-own-advantage", help="Confidence tokens get the calibration terms' advantage."
        ),
    ] = None,
    ranking: Annotated[
        bool | None, typer.Option("--ranking/--no-ranking", help="Within-group ranking term (right above wrong).")
    ] = None,
    pairs: Annotated[
        bool | None, typer.Option("--pairs/--no-pairs", help="Clean/damaged image pairs in each group.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Write into the output folder even if it holds files.")
    ] = False,
) -> None:
    """Train a model to write calibrated <vision_confidence> and <reasoning_confidence> (GRPO + TAR)."""
    from ..errors import InputError
    from ..training.run import GRPORunConfig, load_config
    from ..training.run import train_grpo as run

    overrides = {
        "model": model,
        "data": data,
        "output": out,
        "mode": mode,
        "tar": tar,
        "limit": limit,
        "seed": seed,
        "visual_target": visual_target,
        "target_artifact": target_artifact,
        "own_advantage": own_advantage,
        "ranking": ranking,
        "pairs": pairs,
    }
    try:
        if config is not None:
            run_config = load_config(config, **overrides)
        else:
            missing = [f"--{k}" for k, v in (("model", model), ("data", data), ("out", out)) if v is None]
            if missing:
                raise InputError(f"without --config, give {', '.join(missing)}")
            run_config = GRPORunConfig(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        if max_steps is not None:
            run_config = GRPORunConfig(
                **{**run_config.__dict__, "grpo": {**dict(run_config.grpo), "max_steps": max_steps}}
            )
        _check_sources(run_config.model, run_config.data)
        where = "--out" if out is not None or config is None else f"output (in {config})"
        refuse_package_folder(Path(run_config.output), option=where, force=force)
        check_output_folder(Path(run_config.output), option=where, force=force)
        run_config.options()  # checks the calibration options before anything loads (imports TRL: seconds)
        run_config.grpo_config()  # and TRL's own options, with the precision this machine can train in
    except ImportError as exc:
        fail(f"{exc}; install the training extra: pip install 'lvlm-guardrail[train]'")
    except (InputError, ValueError) as exc:
        fail(str(exc))
    try:
        saved = run(run_config)
    except OSError as exc:  # a model that cannot be loaded, a disk that filled up
        fail(f"training stopped: {exc}")
    typer.echo(f"saved to {saved}")


deprecated_alias("train-calibration", "train grpo", train_grpo)


def _check_sources(model: str, data: str) -> None:
    """Refuse, before anything loads, data that cannot be read and a model path that is not a model folder (a
    name that is no path is left to the hub cache)."""
    from typing import get_args

    from ..data.easyvqa import Split
    from ..errors import InputError

    if data.startswith("easyvqa:"):
        splits = get_args(Split)
        parts = data.split(":")
        if parts[1] not in splits or parts[2:] not in ([], ["clean"]):
            raise InputError(
                f"data {data!r}: expected easyvqa:SPLIT or easyvqa:SPLIT:clean, SPLIT one of {', '.join(splits)}"
            )
    else:
        path = Path(data)
        if not path.is_file():
            raise InputError(f"data {data!r}: no such file (a labelled JSONL file, or easyvqa:SPLIT)")
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise InputError(f"data {data!r}: cannot be read ({exc.strerror or exc})") from exc
    folder = Path(model)
    if folder.exists() and not (folder / "config.json").is_file():
        raise InputError(f"model {model!r}: not a model folder (no config.json)")
