"""The transformers backend itself: ``TransformersBackend``, one loaded model with its four jobs joined.

Its jobs live in sibling modules, each a class this one inherits: encoding (``_encoding.PromptEncoding``), kept
references and the prefill hook (``_references.ReferenceKeeping``), generation (``_generation.Generating``) and
teacher-forced scoring (``_scoring.TeacherForcedScoring``); the state they share is declared in
``_state.BackendState``. This module holds what joins them: the arguments, checked, and loading from a folder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from ...errors import BackendError
from .._vision_inputs import DEFAULT_MAX_PIXELS
from ._generation import Generating
from ._loading import load_model_and_processor, resolve_device, resolve_dtype
from ._references import KeptReferences
from ._scoring import TeacherForcedScoring
from ._state import max_positions_of

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "TransformersBackend"]

DEFAULT_MAX_NEW_TOKENS = 512
"""Answer-length limit when neither the caller nor the model's generation config sets one."""


class TransformersBackend(Generating, TeacherForcedScoring):
    """Generate with, and re-score under perturbed images, a ``transformers`` image-text-to-text model.

    ``model`` and ``processor`` are the in-memory objects (``from_pretrained`` loads both from a local
    directory). The model is moved to ``device`` (default: CUDA when present, else the CPU) and, when given,
    cast to ``dtype`` (``"bfloat16"``, ``torch.float16``, ...).

    Generation is greedy unless ``options.temperature > 0``, or ``sample_reasks`` is set and the call is a
    re-ask (``options.attempt > 0``: then ``reask_temperature`` is used); sampling is seeded by ``options.seed``
    (else the attempt number) so a re-ask is reproducible.

    ``max_images`` declares the most images one prompt may carry (``None``: not declared); ``from_pretrained``
    takes it from the model folder's ``config.json`` key ``max_images`` unless given. With it, the guard's
    ``fetch_more_views`` (mode ``auto``) puts fetched views in place of the request's images rather than adding
    them past that limit.

    ``max_positions`` is the most tokens the model takes, prompt and answer together (default: the config's
    ``max_position_embeddings``; ``None`` there: not checked). A prompt must leave room for the answer: the call's
    token limit, but at most a quarter of the positions (a model of 256 positions takes prompts of at most 192
    tokens, images included). A longer one is an :class:`~guardrail.InputError` naming its length and the limit
    (``check_request``, before any model call), never a forward pass far past the positions the model knows (on a
    CPU, a 20,000-word question in a batch of 16 took gigabytes and the whole batch's time budget).

    ``keep_references`` (default 8) is how many recent generations keep row 0 of their scoring pass for
    ``reference`` (0: none, and generation runs ``model.generate`` alone); a ``generate_batch`` keeps all of its
    answers' when it has more. ``keep_distributions`` also keeps their full next-token distributions (``(tokens,
    vocab)`` float32 each, on the model's device), which an estimator measuring the full-vocabulary KL or entropy
    needs to skip row 0.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_new_tokens: int | None = None,
        sample_reasks: bool = False,
        reask_temperature: float = 0.7,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        max_images: int | None = None,
        max_positions: int | None = None,
        keep_references: int = 8,
        keep_distributions: bool = False,
    ) -> None:
        if keep_references < 0:
            raise ValueError(f"`keep_references` must be an int >= 0, got {keep_references}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be an int >= 1, got {max_new_tokens}")
        if max_images is not None and not (type(max_images) is int and max_images >= 1):  # bool is no count
            raise ValueError(f"`max_images` must be an int >= 1 or None, got {max_images!r}")
        if reask_temperature <= 0:
            raise ValueError(f"`reask_temperature` must be > 0 (sampling on re-asks), got {reask_temperature}")
        if max_positions is not None and not (type(max_positions) is int and max_positions >= 2):
            raise ValueError(f"`max_positions` must be an int >= 2 or None, got {max_positions!r}")
        self.device = resolve_device(device)
        target_dtype = resolve_dtype(dtype)
        self.model = model.to(self.device) if target_dtype is None else model.to(self.device, target_dtype)
        self.model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        # The answer-length limit: this argument, else the model's own generation config, else 512.
        configured = getattr(getattr(model, "generation_config", None), "max_new_tokens", None)
        self.max_new_tokens = max_new_tokens or configured or DEFAULT_MAX_NEW_TOKENS
        self.sample_reasks = sample_reasks
        self.reask_temperature = reask_temperature
        self.max_image_pixels = max_image_pixels
        self._max_images = max_images
        self._lock = threading.Lock()
        self.keep_distributions = keep_distributions
        self._kept = KeptReferences(keep_references)
        self._pixels_alone = {}  # see TeacherForcedScoring._encode_variants
        config = getattr(model, "config", None)
        self._name = name or str(getattr(config, "_name_or_path", "") or getattr(config, "model_type", "model"))
        self.max_positions = max_positions or max_positions_of(config)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> TransformersBackend:
        """Load model and processor from a local directory (never from a hub); ``kwargs`` go to ``__init__``.

        Without ``dtype`` the checkpoint's own dtype is kept on a GPU and float32 is used on the CPU (where half
        precision is slow and lossy). The model class is the one the folder's config names (see ``_loading``).

        When the model's full processor cannot be built here (Qwen2-VL-style processors need torchvision for
        their video part), it is assembled from the image processor and the tokenizer.

        ``max_images`` (a keyword for ``__init__``) defaults to the folder's ``config.json`` key ``max_images``
        (an extra key transformers keeps on the config; absent: not declared).
        """
        path = Path(path)
        model, processor = load_model_and_processor(path, device=device, dtype=dtype)
        kwargs.setdefault("name", path.name)
        if "max_images" not in kwargs:
            declared = getattr(getattr(model, "config", None), "max_images", None)
            if declared is not None and not (type(declared) is int and declared >= 1):
                raise BackendError(f"{str(path)!r}: config.json max_images must be an int >= 1, got {declared!r}")
            kwargs["max_images"] = declared
        return cls(model, processor, device=device, dtype=dtype, **kwargs)
