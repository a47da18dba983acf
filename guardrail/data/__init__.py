"""Data sets with known scene content, and graded image corruptions that make perception fail on purpose."""

from __future__ import annotations

from .corruptions import ALL_CORRUPTIONS, CORRUPTIONS, HELDOUT_CORRUPTIONS, UNSEEN_CORRUPTIONS, corrupt
from .easyvqa import (
    COLORS,
    SHAPES,
    Example,
    QuestionType,
    Scene,
    Split,
    classify_question,
    data_dir,
    iter_images,
    load_easyvqa,
)

__all__ = [
    "ALL_CORRUPTIONS",
    "COLORS",
    "CORRUPTIONS",
    "HELDOUT_CORRUPTIONS",
    "SHAPES",
    "UNSEEN_CORRUPTIONS",
    "Example",
    "QuestionType",
    "Scene",
    "Split",
    "classify_question",
    "corrupt",
    "data_dir",
    "iter_images",
    "load_easyvqa",
]
