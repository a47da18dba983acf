"""The embedded default: a tiny LLaVA-architecture model trained on easy-VQA, shipped inside the package.

Only paths live here: the shipped model is an ordinary transformers model folder, loaded by the same generic code
a user points at their own model (``AutoModelForImageTextToText`` / ``AutoProcessor``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["reference_model_path"]


def reference_model_path() -> Path:
    """The folder of the shipped, trained reference model (``save_pretrained`` format)."""
    return Path(__file__).resolve().parent / "model"
