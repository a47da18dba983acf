"""What the commands that guard a model say when it has no calibration: one ``warning:`` line on stderr.

``load_guard`` warns with a Python :class:`~guardrail.errors.UncalibratedWarning`; a command prints that as a
plain line naming the model folder instead (the Python warning is silenced there, not shown twice), before any
answer. With the opt-in (``--accept-uncalibrated``) a shorter ``note:`` line says that raw scores decide.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["load_guard_telling_calibration", "uncalibrated_line"]


def load_guard_telling_calibration(model_dir: Path, *, opt_in: str | None, **options: Any) -> Guard:
    """``load_guard(model_dir, **options)``, then the line :func:`uncalibrated_line` on stderr when the guard is
    uncalibrated. ``opt_in``: the command's flag that lets raw scores decide (``None`` where it has none)."""
    from ..errors import UncalibratedWarning
    from ..pretrained import load_guard

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UncalibratedWarning)  # said below, as a line naming the folder
        guard = load_guard(model_dir, **options)
    line = uncalibrated_line(guard, model_dir, opt_in=opt_in)
    if line is not None:
        typer.echo(line, err=True)
    return guard


def uncalibrated_line(guard: Guard, model_dir: Path, *, opt_in: str | None) -> str | None:
    """``None`` for a calibrated guard; else a ``warning:`` line (no answer will be accepted, how to calibrate and
    how many labelled rows it takes) or, where the policy opted in, a ``note:`` line."""
    from ..calibration.base import calibration_advice
    from ..pretrained import ARTIFACT_FILENAME

    if guard.calibrated:
        return None
    where = f"model {model_dir} has no calibration (no {ARTIFACT_FILENAME} beside it, or it was not used)"
    if guard.policy.accept_uncalibrated:
        return f"note: {where}: its raw scores, not probabilities, decide (the opt-in to uncalibrated answers)"
    advice = calibration_advice().replace("FOLDER", str(model_dir))
    how_to_opt_in = opt_in or "a policy with accept_uncalibrated: true (--policy FILE)"
    return (
        f"warning: {where}: its confidences are raw scores, not probabilities, so policy {guard.policy.name!r} "
        f"accepts no answer (each ends in on_uncalibrated: {guard.policy.on_uncalibrated.action.value}). To guard "
        f"it, {advice}; it is then found beside the model (or give --artifact FILE). To decide on raw scores "
        f"anyway: {how_to_opt_in}"
    )
