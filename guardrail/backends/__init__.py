"""Access to vision-language models: the contracts every backend meets, and the backends the project ships.

The contracts (``base.py``) are imported eagerly and cost nothing. ``TransformersBackend`` (any local
``transformers`` image-text-to-text model), ``OpenAICompatibleBackend`` (any OpenAI-compatible server, over
``openai``) and ``LangChainBackend`` (any LangChain chat model) are imported lazily, on first use, so that
``import guardrail`` loads none of torch, transformers, openai or langchain_openai.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import (
    AsyncBackend,
    Backend,
    BatchBackend,
    BatchScoringBackend,
    CheckingBackend,
    ReferenceScores,
    ReferenceScoringBackend,
    ScoringBackend,
    ScoringItem,
    ScoringUnavailable,
    TeacherForcedScores,
    TextScores,
    TextScoringBackend,
)
from .coalescing import CoalescingBackend

if TYPE_CHECKING:
    from .langchain import LangChainBackend
    from .openai import OpenAICompatibleBackend
    from .transformers import TransformersBackend

__all__ = [
    "AsyncBackend",
    "Backend",
    "BatchBackend",
    "BatchScoringBackend",
    "CheckingBackend",
    "CoalescingBackend",
    "LangChainBackend",
    "OpenAICompatibleBackend",
    "ReferenceScores",
    "ReferenceScoringBackend",
    "ScoringBackend",
    "ScoringItem",
    "ScoringUnavailable",
    "TeacherForcedScores",
    "TextScores",
    "TextScoringBackend",
    "TransformersBackend",
]

_LAZY = {
    "TransformersBackend": ".transformers",
    "OpenAICompatibleBackend": ".openai",
    "LangChainBackend": ".langchain",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
