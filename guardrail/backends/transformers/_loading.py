"""Loading a model folder: the device and dtype to load on, and the model and processor classes the folder names.

The model class is the image-text-to-text class of the ``model_type`` the folder's ``config.json`` names (for the
reference model ``llava``: ``LlavaForConditionalGeneration``), imported straight from transformers, and the processor
is the class its ``processor_config.json`` names (``processor_class``). These are the classes
``AutoModelForImageTextToText`` and ``AutoProcessor`` pick, from the same names, without building the Auto config
first. The Auto classes remain the fallback for a folder that names no type or class transformers has (their
error then says why), so every folder loads as it did through them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ...errors import BackendError
from .._vision_inputs import TokenExpandingProcessor
from ._state import MODEL_ERRORS

__all__ = ["load_model_and_processor", "resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when present and else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from ``"bfloat16"``/``"float16"``/``"float32"`` (or a dtype); ``None`` keeps the model's."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"`dtype` must name a torch dtype such as 'bfloat16' or 'float32', got {dtype!r}")
    return resolved


def load_model_and_processor(
    path: Path, *, device: str | torch.device | None, dtype: str | torch.dtype | None
) -> tuple[Any, Any]:
    """The model and processor of the local folder ``path`` (never a hub); ``BackendError`` when it holds none.

    Without ``dtype`` the checkpoint's own dtype is kept on a GPU and float32 is used on the CPU (where half
    precision is slow and lossy). When the model's full processor cannot be built here (Qwen2-VL-style processors
    need torchvision for their video part), it is assembled from the image processor and the tokenizer.
    """
    import transformers

    library: Any = transformers  # the model and processor classes are untyped
    if not path.is_dir():
        raise BackendError(f"model directory {str(path)!r} does not exist")
    try:
        on_gpu = resolve_device(device).type == "cuda"
        load_dtype = resolve_dtype(dtype) or ("auto" if on_gpu else torch.float32)
        model_class = _model_class(path / "config.json") or library.AutoModelForImageTextToText
        model = model_class.from_pretrained(path, dtype=load_dtype, local_files_only=True)
        processor_class = _named_class(path / "processor_config.json", "processor_class") or library.AutoProcessor
        try:
            processor: Any = processor_class.from_pretrained(path, local_files_only=True)
        except (ImportError, ValueError, TypeError, AttributeError):
            processor = None
        if not hasattr(processor, "image_processor"):  # none, or a bare tokenizer
            tokenizer = library.AutoTokenizer.from_pretrained(path, local_files_only=True)
            images = library.AutoImageProcessor.from_pretrained(path, local_files_only=True)
            processor = TokenExpandingProcessor(tokenizer, images)
    except (OSError, *MODEL_ERRORS) as exc:
        raise BackendError(f"cannot load a vision-language model from {str(path)!r}: {exc}") from exc
    return model, processor


def _model_class(config_file: Path) -> Any:
    """The image-text-to-text model class of the ``model_type`` that ``config_file`` names (what
    ``AutoModelForImageTextToText`` picks for it); ``None`` when there is none (the Auto class then says why)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as NAMES

    model_type = _config_value(config_file, "model_type")
    return None if not isinstance(model_type, str) else _transformers_class(NAMES.get(model_type))


def _named_class(config_file: Path, key: str) -> Any:
    """The transformers class that ``config_file`` names under ``key``; ``None`` when it names none."""
    return _transformers_class(_config_value(config_file, key))


def _config_value(config_file: Path, key: str) -> object:
    """``key`` of the JSON object in ``config_file``; ``None`` without the file, the object or the key."""
    try:
        value: object = json.loads(config_file.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value


def _transformers_class(named: object) -> Any:
    """The class transformers exports as ``named`` when it is a model or processor class (it has
    ``from_pretrained``); ``None`` for anything else (no name, a name transformers does not have, custom code)."""
    if not isinstance(named, str) or not named.isidentifier():
        return None
    import transformers

    try:
        found = getattr(transformers, named, None)
    except (ImportError, RuntimeError):  # a class whose optional dependency is missing: the Auto class says why
        return None
    return found if callable(getattr(found, "from_pretrained", None)) else None
