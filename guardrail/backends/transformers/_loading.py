"""Loading a model folder: the device and dtype to load on, and the model and processor it holds (Auto classes)."""

from __future__ import annotations

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
        model_class = library.AutoModelForImageTextToText
        model = model_class.from_pretrained(path, dtype=load_dtype, local_files_only=True)
        processor_class = library.AutoProcessor
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
