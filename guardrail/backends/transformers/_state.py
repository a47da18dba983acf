"""What every part of the transformers backend shares: the model, its processor and device, and its identity.

``BackendState`` declares the attributes ``TransformersBackend.__init__`` sets, so that each job's class (encoding,
kept references, generation, scoring) is typed against the same state without owning it.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

__all__ = ["MODEL_ERRORS", "BackendState", "max_positions_of"]

MODEL_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError)
"""What transformers and torch raise for a model or input they cannot handle; translated to ``BackendError``."""


def max_positions_of(config: Any) -> int | None:
    """The most positions (tokens) the model's language model takes: ``max_position_embeddings`` of its text config
    (else of its config); ``None`` when it declares none."""
    for holder in (getattr(config, "text_config", None), config):
        value = getattr(holder, "max_position_embeddings", None)
        if type(value) is int and value > 0:
            return value
    return None


class BackendState:
    """The state of one loaded model, set by ``TransformersBackend.__init__`` (see its docstring)."""

    model: Any
    processor: Any
    tokenizer: Any
    device: torch.device
    max_new_tokens: int
    max_image_pixels: int
    max_positions: int | None
    _name: str
    _max_images: int | None
    _lock: threading.Lock
    """One model call at a time: the seeded RNG and the model are shared."""

    @property
    def name(self) -> str:
        """The model's name (its directory or ``_name_or_path``)."""
        return self._name

    @property
    def max_images(self) -> int | None:
        """The most images one prompt may carry, ``None`` when not declared (see ``TransformersBackend``)."""
        return self._max_images

    @property
    def patch_size(self) -> int:
        """The vision encoder's patch size in pixels (the perturbation's patch), 14 when the config has none."""
        vision = getattr(self.model.config, "vision_config", None)
        return int(getattr(vision, "patch_size", None) or 14)
