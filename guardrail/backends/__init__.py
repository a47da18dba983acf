"""Access to vision-language models.

``TransformersBackend`` (any local ``transformers`` image-text-to-text model) is imported lazily, on first use,
so that ``import guardrail`` does not load torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import AsyncBackend, Backend

if TYPE_CHECKING:
    from .transformers import TransformersBackend

__all__ = ["AsyncBackend", "Backend", "TransformersBackend"]

_LAZY = {"TransformersBackend": ".transformers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
