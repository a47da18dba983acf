"""The embedded default: a tiny LLaVA-architecture model trained on easy-VQA, shipped inside the package.

Only its path and its name live here: the shipped model is an ordinary transformers model folder, loaded by the
same generic code a user points at their own model (``AutoModelForImageTextToText`` / ``AutoProcessor``). Its name
is what results and traces call it (``chat guardrail-reference-llava``), not its folder's (``model``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "REFERENCE_MODEL_NAME",
    "SCENES_MODEL_NAME",
    "SHIPPED_MODELS",
    "VERBALIZED_MODEL_NAME",
    "reference_model_name",
    "reference_model_path",
    "scenes_model_path",
    "shipped_model_path",
    "verbalized_model_path",
]

REFERENCE_MODEL_NAME = "guardrail-reference-llava"
"""The shipped model's name (``gen_ai.request.model``, span names, results)."""
VERBALIZED_MODEL_NAME = "guardrail-reference-llava-verbalized"
"""The shipped model trained to write its own confidence (``verbalized.py``)."""
SCENES_MODEL_NAME = "guardrail-reference-llava-scenes"
"""The shipped model of the scenes world (``scenes.py``): several small shapes on a larger picture."""
SHIPPED_MODELS: dict[str, str] = {"reference": "model", "verbalized": "verbalized_model", "scenes": "scenes_model"}
"""Short names a user may give instead of a folder (``guardrail ask --model scenes``), and their folders."""


def reference_model_path() -> Path:
    """The folder of the shipped, trained reference model (``save_pretrained`` format)."""
    return Path(__file__).resolve().parent / "model"


def verbalized_model_path() -> Path:
    """The folder of the reference model trained to write ``<vision_confidence>`` and ``<reasoning_confidence>``."""
    return Path(__file__).resolve().parent / "verbalized_model"


def scenes_model_path() -> Path:
    """The folder of the reference model trained on the scenes world."""
    return Path(__file__).resolve().parent / "scenes_model"


def shipped_model_path(name: str) -> Path | None:
    """The folder of the shipped model called ``name`` (a key of ``SHIPPED_MODELS``), else ``None``."""
    folder = SHIPPED_MODELS.get(name)
    return None if folder is None else Path(__file__).resolve().parent / folder


def reference_model_name(path: str | Path) -> str | None:
    """The name of a shipped model when ``path`` is its folder, else ``None``."""
    names = {
        reference_model_path(): REFERENCE_MODEL_NAME,
        verbalized_model_path(): VERBALIZED_MODEL_NAME,
        scenes_model_path(): SCENES_MODEL_NAME,
    }
    return names.get(Path(path).resolve())
