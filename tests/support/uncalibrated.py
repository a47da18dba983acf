"""A model folder without its calibration artifact: what a user who forgot to calibrate has."""

from __future__ import annotations

import shutil
from pathlib import Path

from guardrail.pretrained import ARTIFACT_FILENAME
from guardrail.reference import reference_model_path


def bare_reference_model(parent: Path) -> Path:
    """The shipped reference model copied to ``parent / "model"`` without its ``guardrail_calibration.json``."""
    folder = parent / "model"
    shutil.copytree(reference_model_path(), folder, ignore=shutil.ignore_patterns(ARTIFACT_FILENAME))
    assert not (folder / ARTIFACT_FILENAME).exists()
    return folder
