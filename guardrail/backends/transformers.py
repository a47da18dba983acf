"""A white-box backend for any ``transformers`` vision-language model (``AutoModelForImageTextToText``).

Besides ``generate`` it offers what the decoupled estimator needs (``guardrail.confidence.ScoringBackend``):

- ``score``: teacher-forced re-scoring of generated token ids under the original images and any number of image
  variants, all rows in one batched forward pass. Each row is the same prompt + answer with other pixels; with
  equal image sizes the rows tokenise identically, so no padding is needed and row 0 reproduces the
  generation's own log-probs. Full next-token distributions are reduced right away (entropy, top-2 margin and
  KL to row 0, per token), so the ``(rows, tokens, vocab)`` tensor never outlives the call.
- ``reference`` (``ReferenceScoringBackend``): row 0 kept from generation itself, so that ``score(...,
  reference=...)`` runs only the variant rows. The answer tokens' log-probs (and, with ``keep_distributions``,
  their full distributions) are generation's own logits; the familiarity evidence comes from generation's own
  prefill forward pass, which a hook asks, for that one pass, for the logits before each question token and the
  hidden states (no extra forward pass). The variant rows reuse generation's token ids and run only the image
  processor. The last ``keep_references`` generations' references are kept (a few kilobytes each, plus
  ``(tokens, vocab)`` float32 on the model's device each with ``keep_distributions``), each dropped with its
  ``Generation``.
- ``model_images``: the request's images at the model's input resolution (where perturbations act).
- ``token_offsets``: the character range of each generated token in the response text.

Tested on tiny random LLaVA, Idefics3/SmolVLM, Qwen2-VL and Qwen2.5-VL models. Library errors are translated to
``BackendError`` and image problems to ``ImageError``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import BackendError, GuardrailError, InputError
from ..images import decode_image
from ..responses import final_answer, token_char_offsets
from ..types import Generation, GenerationOptions, ImageBlock, Request, TextBlock, Usage
from ._vision_inputs import DEFAULT_MAX_PIXELS, TokenExpandingProcessor, model_resolution
from .base import ReferenceScores, ScoringItem, TeacherForcedScores
from .logits import entropy, full_kl, token_logprobs, top2_margin

__all__ = ["TransformersBackend", "resolve_device", "resolve_dtype"]

_MODEL_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError)
_SEQUENCE_KEYS = {"input_ids": None, "attention_mask": 1, "mm_token_type_ids": 0, "token_type_ids": 0}
"""Per-token inputs extended by the answer tokens when teacher forcing, with the fill value (None: the ids)."""
_TAG_TOKEN = re.compile(
    r"^\s*<\s*/?\s*(think|vision|reasoning|analysis|confidence|vision_confidence|reasoning_confidence)\s*>\s*$"
    r"|\\boxed",
    re.IGNORECASE,
)
"""Special tokens that are structured-answer tags, kept visible when decoding."""


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


FEATURE_LAYER = 0
"""Which hidden state the image features are pooled from: 0 = the model's input embeddings, where the projected
vision-encoder output stands at the image positions."""

DEFAULT_MAX_NEW_TOKENS = 512
"""Answer-length limit when neither the caller nor the model's generation config sets one."""


def _max_positions(config: Any) -> int | None:
    """The most positions (tokens) the model's language model takes: ``max_position_embeddings`` of its text config
    (else of its config); ``None`` when it declares none."""
    for holder in (getattr(config, "text_config", None), config):
        value = getattr(holder, "max_position_embeddings", None)
        if type(value) is int and value > 0:
            return value
    return None


def _rows_alike(batch: dict[str, torch.Tensor], rows: int) -> bool:
    """Whether every integer tensor of a ``rows``-row processor output holds the same values in each row.

    A tensor's first dimension is the row count or, for per-image tensors (Qwen's ``image_grid_thw``), rows x
    images per row, images row after row; anything else counts as not alike.
    """
    for value in batch.values():
        if value.is_floating_point():
            continue
        if value.dim() == 0 or value.shape[0] % rows:
            return False
        per_row = value.reshape(rows, -1)
        if not bool((per_row == per_row[:1]).all()):
            return False
    return True


def _same_inputs(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> bool:
    """Whether two model input dicts hold the same tensors (names, shapes, dtypes, values)."""
    return left.keys() == right.keys() and all(
        left[k].dtype == right[k].dtype and torch.equal(left[k], right[k]) for k in left
    )


def _row_inputs(batch: dict[str, torch.Tensor], row: int, pad: int, rows: int) -> dict[str, torch.Tensor] | None:
    """Row ``row``'s integer inputs of a left-padded ``rows``-row batch as encoding its prompt alone gives them:
    per-token tensors without the row's ``pad`` positions, per-row and per-image tensors (images row after row) the
    row's own part; ``None`` for a tensor of another layout."""
    length = batch["input_ids"].shape[1]
    out: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        if value.is_floating_point():
            continue
        if value.dim() >= 2 and value.shape[0] == rows and value.shape[1] == length:
            out[key] = value[row : row + 1, pad:]
        elif value.dim() >= 1 and value.shape[0] % rows == 0:
            share = value.shape[0] // rows
            out[key] = value[row * share : (row + 1) * share]
        else:
            return None
    return out


def _stack_key(rows: dict[str, torch.Tensor]) -> tuple[object, ...]:
    """What rows must share to be stacked with others: their input names, and each non-per-token input's dtype and
    shape past the first dimension (pixels of one size, image grids of one width)."""
    return tuple(
        (key, value.dtype, () if key in _SEQUENCE_KEYS else tuple(value.shape[1:]))
        for key, value in sorted(rows.items())
    )


@dataclass(frozen=True)
class _KeptReference(ReferenceScores):
    """A reference as this backend keeps it, with the prompt it was measured on: generation's integer inputs
    (``prompt_inputs``: token ids, masks, image grids, ...; the variant rows must match them) and the names of its
    floating-point inputs (the pixels, which the variants replace)."""

    prompt_inputs: dict[str, torch.Tensor] | None = None
    pixel_keys: frozenset[str] = frozenset()


_VariantRows = tuple[_KeptReference, dict[str, torch.Tensor], int]
"""One answer's variant rows to score: its kept row 0, the rows' model inputs, the position before its answer."""


class _PrefillCapture:
    """Hooks that make generation's own prefill forward pass also measure each row's familiarity evidence.

    While installed (``with``), the first forward pass of the model on this thread, when it is over the whole
    (left-padded) prompt batch, is asked for the logits before each row's question tokens besides the last
    position's (which generation reads as the first answer token's) and for the hidden states; from its output the
    evidence ``score`` measures on row 0 of each prompt is taken (``evidence``, one per row), and the pass goes on
    to generation unchanged. Later passes are untouched.
    """

    def __init__(self, backend: TransformersBackend, prompt_ids: torch.Tensor, pads: Sequence[int]) -> None:
        self.backend = backend
        self.shape = tuple(prompt_ids.shape)  # (rows, positions)
        self.rows = [prompt_ids[row, pad:] for row, pad in enumerate(pads)]  # each prompt without its padding
        self.pads = list(pads)
        self.positions = [backend._prompt_positions(ids) for ids in self.rows]
        wanted = torch.cat([question - 1 + pad for (question, _), pad in zip(self.positions, self.pads, strict=True)])
        last = self.shape[1] - 1
        keep = torch.unique(wanted)  # sorted; never the last position (no question token follows it)
        self.keep = torch.cat([keep[keep != last], torch.tensor([last], device=prompt_ids.device)])
        self.evidence: list[TeacherForcedScores] | None = None
        self._thread = threading.get_ident()
        self._handles: list[Any] = []

    def __enter__(self) -> _PrefillCapture:
        model = self.backend.model
        self._handles = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()  # a no-op for a hook already removed

    def _before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if threading.get_ident() != self._thread:  # another backend's call on a shared model
            return None
        self._handles[0].remove()  # one pass only (torch runs the hooks from a copy: removing is safe here)
        ids = kwargs.get("input_ids")
        whole_prompt = ids is not None and tuple(ids.shape) == self.shape  # not a chunk
        if args or not whole_prompt or "logits_to_keep" not in kwargs:
            self._handles[1].remove()
            return None
        return args, {**kwargs, "logits_to_keep": self.keep, "output_hidden_states": True}

    def _after(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if threading.get_ident() != self._thread:
            return
        self._handles[1].remove()
        hidden = getattr(output, "hidden_states", None)
        evidence = []
        for row, (ids, pad, (question, image)) in enumerate(zip(self.rows, self.pads, self.positions, strict=True)):
            features = None if hidden is None else hidden[FEATURE_LAYER][row, pad:]
            logits = output.logits[row, torch.searchsorted(self.keep, question - 1 + pad)]
            found = self.backend._prompt_evidence(ids, question, image, logits, features)
            evidence.append(TeacherForcedScores(token_logprobs=torch.empty(1, 0), **found))
        self.evidence = evidence


class _KeptReferences:
    """The references of the last ``capacity`` generations (or of a whole batch, when larger), each dropped as soon
    as its ``Generation`` is.

    An entry is found only for the very ``Generation`` object it was kept for, with the very ``Request`` it answered
    (a copy, or the same answer to another request, finds nothing: the caller then scores row 0 itself).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[weakref.ref[Generation], weakref.ref[Request], _KeptReference]] = (
            OrderedDict()
        )
        self._lock = threading.RLock()  # re-entrant: a weakref callback may run while this thread holds it

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, request: Request, generation: Generation, reference: _KeptReference, *, room: int = 0) -> None:
        """Keep ``reference``, evicting the oldest beyond ``capacity`` entries, or ``room`` when larger (a batch's
        size: the estimates of a batch come after all of its generations)."""
        key = id(generation)

        def forget(_: object) -> None:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and entry[0]() is None:
                    del self._entries[key]

        with self._lock:
            self._entries[key] = (weakref.ref(generation, forget), weakref.ref(request), reference)
            self._entries.move_to_end(key)
            while len(self._entries) > max(self.capacity, room):
                self._entries.popitem(last=False)

    def get(self, request: Request, generation: Generation) -> _KeptReference | None:
        with self._lock:
            entry = self._entries.get(id(generation))
            if entry is None or entry[0]() is not generation or entry[1]() is not request:
                return None
            self._entries.move_to_end(id(generation))
            reference = entry[2]
        return reference if reference.token_ids == tuple(generation.token_ids) else None


class TransformersBackend:
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
        self.tokenizer: Any = getattr(processor, "tokenizer", processor)
        # The answer-length limit: this argument, else the model's own generation config, else 512.
        configured = getattr(getattr(model, "generation_config", None), "max_new_tokens", None)
        self.max_new_tokens: int = max_new_tokens or configured or DEFAULT_MAX_NEW_TOKENS
        self.sample_reasks = sample_reasks
        self.reask_temperature = reask_temperature
        self.max_image_pixels = max_image_pixels
        self._max_images = max_images
        self._lock = threading.Lock()  # one model call at a time: the seeded RNG and the model are shared
        self.keep_distributions = keep_distributions
        self._kept = _KeptReferences(keep_references)
        self._pixels_alone: dict[tuple[int, int], bool] = {}  # see _encode_variants
        config = getattr(model, "config", None)
        self._name = name or str(getattr(config, "_name_or_path", "") or getattr(config, "model_type", "model"))
        self.max_positions: int | None = max_positions or _max_positions(config)

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
        precision is slow and lossy).

        When the model's full processor cannot be built here (Qwen2-VL-style processors need torchvision for
        their video part), it is assembled from the image processor and the tokenizer.

        ``max_images`` (a keyword for ``__init__``) defaults to the folder's ``config.json`` key ``max_images``
        (an extra key transformers keeps on the config; absent: not declared).
        """
        import transformers

        auto: Any = transformers  # the Auto classes are untyped
        path = Path(path)
        if not path.is_dir():
            raise BackendError(f"model directory {str(path)!r} does not exist")
        try:
            on_gpu = resolve_device(device).type == "cuda"
            load_dtype = resolve_dtype(dtype) or ("auto" if on_gpu else torch.float32)
            model = auto.AutoModelForImageTextToText.from_pretrained(path, dtype=load_dtype, local_files_only=True)
            try:
                processor: Any = auto.AutoProcessor.from_pretrained(path, local_files_only=True)
            except (ImportError, ValueError, TypeError, AttributeError):
                processor = None
            if not hasattr(processor, "image_processor"):  # none, or a bare tokenizer
                tokenizer = auto.AutoTokenizer.from_pretrained(path, local_files_only=True)
                images = auto.AutoImageProcessor.from_pretrained(path, local_files_only=True)
                processor = TokenExpandingProcessor(tokenizer, images)
        except (OSError, *_MODEL_ERRORS) as exc:
            raise BackendError(f"cannot load a vision-language model from {str(path)!r}: {exc}") from exc
        kwargs.setdefault("name", path.name)
        if "max_images" not in kwargs:
            declared = getattr(getattr(model, "config", None), "max_images", None)
            if declared is not None and not (type(declared) is int and declared >= 1):
                raise BackendError(f"{str(path)!r}: config.json max_images must be an int >= 1, got {declared!r}")
            kwargs["max_images"] = declared
        return cls(model, processor, device=device, dtype=dtype, **kwargs)

    # -- identity ---------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The model's name (its directory or ``_name_or_path``)."""
        return self._name

    @property
    def max_images(self) -> int | None:
        """The most images one prompt may carry, ``None`` when not declared (see the class docstring)."""
        return self._max_images

    @property
    def patch_size(self) -> int:
        """The vision encoder's patch size in pixels (the perturbation's patch), 14 when the config has none."""
        vision = getattr(self.model.config, "vision_config", None)
        return int(getattr(vision, "patch_size", None) or 14)

    # -- inputs ------------------------------------------------------------------------------------------------

    def images(self, request: Request) -> list[Image.Image]:
        """The request's images, decoded safely (``ImageError`` for a bad one)."""
        return [
            decode_image(block, max_pixels=self.max_image_pixels, name=f"image {i}")
            for i, block in enumerate(request.images)
        ]

    def model_images(self, request: Request) -> list[Image.Image]:
        """The request's images at the model's input resolution (what perturbations should act on)."""
        image_processor = getattr(self.processor, "image_processor", None)
        return [model_resolution(im, image_processor) for im in self.images(request)]

    def _messages(self, request: Request) -> list[dict[str, Any]]:
        messages = []
        for message in request.messages:
            content: list[dict[str, Any]] = []
            for block in message.content:
                if isinstance(block, ImageBlock):
                    content.append({"type": "image"})
                elif isinstance(block, TextBlock):
                    content.append({"type": "text", "text": block.text})
            messages.append({"role": message.role, "content": content})
        return messages

    def _encode(self, prompt: str, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        return self._encode_batch([prompt], [list(images)] if images else None)

    def _encode_batch(
        self, prompts: list[str], image_rows: list[list[Image.Image]] | None, *, pad: bool = False
    ) -> dict[str, torch.Tensor]:
        """One processor call: row i is ``prompts[i]`` with ``image_rows[i]``; tensors on the model's device.
        ``pad``: prompts of different lengths are padded on the left (where generation continues on the right)."""
        padding: dict[str, Any] = {"padding": True, "padding_side": "left"} if pad else {}
        encoded = self.processor(text=prompts, images=image_rows, return_tensors="pt", **padding)
        dtype = self.model.dtype
        return {
            k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in encoded.items()
            if isinstance(v, torch.Tensor)
        }

    def _prompt(self, request: Request) -> str:
        rendered = self.processor.apply_chat_template(
            self._messages(request), add_generation_prompt=True, tokenize=False
        )
        return str(rendered)

    @functools.cached_property
    def _hidden_ids(self) -> frozenset[int]:
        """Special tokens left out of response texts (EOS, padding, image placeholders, ...).

        Special tokens that are structured-answer tags (``<vision>``, ``\\boxed{``, ...) stay visible: some
        tokenizers mark them special, and ``skip_special_tokens=True`` would erase the very spans we parse.
        """
        ids = getattr(self.tokenizer, "all_special_ids", []) or []
        tokens = getattr(self.tokenizer, "all_special_tokens", []) or []
        special = {int(i): str(t) for i, t in zip(ids, tokens, strict=False)}
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}  # includes tokens only Rust marks special
        special.update({int(i): str(t) for i, t in added.items() if getattr(t, "special", False)})
        return frozenset(i for i, t in special.items() if not _TAG_TOKEN.search(t))

    @functools.cached_property
    def _placeholder_ids(self) -> frozenset[int]:
        """Token ids that stand for images or videos in a prompt: never valid in an answer."""
        config = self.model.config
        names = (
            "image_token_index",
            "image_token_id",
            "video_token_id",
            "vision_start_token_id",
            "vision_end_token_id",
        )
        return frozenset(int(v) for v in (getattr(config, n, None) for n in names) if isinstance(v, int) and v >= 0)

    @functools.cached_property
    def _position_tokens(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token ids ``_prompt_positions`` looks for: images, every placeholder, and the hidden tokens (the
        unknown token left out: it is evidence, not noise), as sorted id tensors on the model's device."""
        config = self.model.config
        image_token = {getattr(config, n, None) for n in ("image_token_index", "image_token_id")} - {None}
        unknown = getattr(self.tokenizer, "unk_token_id", None)
        groups = (
            (i for i in image_token if isinstance(i, int)),
            self._placeholder_ids,
            (i for i in self._hidden_ids if i != unknown),
        )
        first, second, third = (torch.tensor(sorted(ids), dtype=torch.long, device=self.device) for ids in groups)
        return first, second, third

    def _visible(self, ids: Sequence[int]) -> list[int]:
        hidden = self._hidden_ids
        return [int(i) for i in ids if int(i) not in hidden]

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(self._visible(ids), skip_special_tokens=False))

    def token_offsets(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
        """Character range of each token of ``token_ids`` in their decoded text (hidden tokens: zero width)."""

        def decode_batch(batch: list[list[int]]) -> list[str]:
            visible = [self._visible(ids) for ids in batch]
            return [str(t) for t in self.tokenizer.batch_decode(visible, skip_special_tokens=False)]

        return token_char_offsets(decode_batch, token_ids)

    # -- how long a prompt may be -------------------------------------------------------------------------------

    def prompt_limit(self, answer_tokens: int | None = None) -> int | None:
        """The most prompt tokens (text and images) a call may have: ``max_positions`` less the room kept for an
        answer of up to ``answer_tokens`` (default: this backend's token limit), at most a quarter of the positions;
        ``None`` when ``max_positions`` is unknown."""
        if self.max_positions is None:
            return None
        room = min(answer_tokens or self.max_new_tokens, self.max_positions // 4)
        return self.max_positions - room

    def check_request(self, request: Request, options: GenerationOptions | None = None) -> None:
        """``InputError`` when ``request``'s prompt is longer than :meth:`prompt_limit` (``CheckingBackend``).

        The prompt's text is counted first, its images' placeholders one token each, which needs no image decoded
        and never undercounts; only a prompt whose text fits is encoded with its images, for the exact length.
        """
        answer_tokens = None if options is None else options.max_new_tokens
        if self.prompt_limit(answer_tokens) is None:
            return
        prompt = self._prompt(request)
        self._screen(prompt, answer_tokens)
        self._check_length(int(self._encode(prompt, self.images(request))["input_ids"].shape[1]), answer_tokens)

    def _screen(self, prompt: str, answer_tokens: int | None) -> None:
        """``InputError`` when the text of ``prompt`` alone (each image placeholder one token) is over the limit: a
        lower bound of its length, counted without decoding an image or expanding the placeholders."""
        limit = self.prompt_limit(answer_tokens)
        if limit is None:
            return
        try:
            text = len(self.tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"])
        except _MODEL_ERRORS:  # a tokenizer that cannot count text alone: the exact count decides
            return
        if text > limit:
            raise self._too_long(text, answer_tokens, exact=False)

    def _check_length(self, tokens: int, answer_tokens: int | None) -> None:
        """``InputError`` when a prompt of ``tokens`` is over :meth:`prompt_limit` for ``answer_tokens``."""
        limit = self.prompt_limit(answer_tokens)
        if limit is not None and tokens > limit:
            raise self._too_long(tokens, answer_tokens, exact=True)

    def _too_long(self, tokens: int, answer_tokens: int | None, *, exact: bool) -> InputError:
        limit, positions = self.prompt_limit(answer_tokens), self.max_positions
        assert limit is not None
        assert positions is not None
        length = f"{tokens:,} tokens" if exact else f"at least {tokens:,} tokens of text"
        return InputError(
            f"the question is too long for {self.name}: its prompt takes {length}, over the limit of {limit:,} "
            f"(the model's {positions:,} positions less {positions - limit:,} kept for the answer; images count too)"
        )

    # -- generation --------------------------------------------------------------------------------------------

    def _sampling(self, options: GenerationOptions) -> tuple[bool, float | None, int]:
        temperature = options.temperature
        if temperature is None and self.sample_reasks and options.attempt > 0:
            temperature = self.reask_temperature
        seed = options.seed if options.seed is not None else options.attempt
        return bool(temperature and temperature > 0), temperature, seed

    def generate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """Answer ``request``: text, ``\\boxed{}`` answer, token ids, their log-probs (temperature 1), usage."""
        return self._generate_one(request, options or GenerationOptions())

    def _generate_one(self, request: Request, options: GenerationOptions, *, room: int = 0) -> Generation:
        """:meth:`generate`; ``room``: the size of the batch it is part of (see ``_KeptReferences.put``)."""
        start = time.perf_counter()
        prompt = self._prompt(request)
        self._screen(prompt, options.max_new_tokens)
        inputs = self._encode(prompt, self.images(request))
        self._check_length(int(inputs["input_ids"].shape[1]), options.max_new_tokens)
        config, seed = self._generation_config(options)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        capture: _PrefillCapture | None = None
        try:
            with self._lock, torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(seed)
                stop = {"tokenizer": self.tokenizer} if config.stop_strings else {}
                if self._kept.capacity:
                    with _PrefillCapture(self, inputs["input_ids"], [0]) as capture:
                        out = self.model.generate(**inputs, generation_config=config, **stop)
                else:
                    out = self.model.generate(**inputs, generation_config=config, **stop)
        except _MODEL_ERRORS as exc:
            raise BackendError(f"{self.name}: generation failed: {exc}") from exc
        prompt_len = inputs["input_ids"].shape[1]
        new_ids = out.sequences[0, prompt_len:]
        logits = torch.stack(out.logits, dim=1)[0, : new_ids.shape[0]]
        generation = self._generation(new_ids, logits, prompt_len, config, options, seed, time.perf_counter() - start)
        if capture is not None and capture.evidence is not None:
            integers = {k: v for k, v in inputs.items() if not v.is_floating_point()}
            self._keep(request, generation, capture.evidence[0], logits, integers, inputs, room=room)
        return generation

    def _keep(
        self,
        request: Request,
        generation: Generation,
        evidence: TeacherForcedScores,
        logits: torch.Tensor,
        prompt_inputs: dict[str, torch.Tensor],
        inputs: dict[str, torch.Tensor],
        *,
        room: int = 0,
    ) -> None:
        """Keep row 0 of ``generation``'s scoring pass: its answer log-probs, ``(tokens, vocab)`` ``logits`` reduced to
        distributions when asked, the prefill's ``evidence`` and the prompt's integer inputs as encoded alone
        (``room``: see ``_KeptReferences.put``)."""
        logprobs = torch.tensor(generation.token_logprobs, dtype=torch.float32).unsqueeze(0)
        kept = _KeptReference(
            token_ids=generation.token_ids,
            scores=dataclasses.replace(evidence, token_logprobs=logprobs),
            distributions=torch.log_softmax(logits.float(), dim=-1) if self.keep_distributions else None,
            prompt_inputs=prompt_inputs,
            pixel_keys=frozenset(k for k, v in inputs.items() if v.is_floating_point()),
        )
        self._kept.put(request, generation, kept, room=room)

    def generate_batch(
        self, requests: Sequence[Request], options: Sequence[GenerationOptions | None]
    ) -> list[Generation]:
        """Answer several requests with one left-padded generation per group that can share it: greedy requests
        with the same token limit, no stop strings and the same number of images. Others are answered one by one.
        Each answer is what :meth:`generate` gives for its request alone (up to float rounding of the padding)."""
        if len(requests) != len(options):
            raise ValueError(f"{len(requests)} requests but {len(options)} options")
        resolved = [o or GenerationOptions() for o in options]
        groups: dict[tuple[int, int], list[int]] = {}
        alone: list[int] = []
        for i, (request, opts) in enumerate(zip(requests, resolved, strict=True)):
            config, _ = self._generation_config(opts)
            if config.do_sample or config.stop_strings:
                alone.append(i)
            else:
                groups.setdefault((config.max_new_tokens, len(request.images)), []).append(i)
        answers: dict[int, Generation] = {}
        for members in groups.values():
            if len(members) == 1:
                alone.extend(members)
                continue
            together = self._generate_together(
                [requests[i] for i in members], [resolved[i] for i in members], room=len(requests)
            )
            answers.update(zip(members, together, strict=True))
        for i in alone:
            answers[i] = self._generate_one(requests[i], resolved[i], room=len(requests))
        return [answers[i] for i in range(len(requests))]

    def _generate_together(
        self, requests: list[Request], options: list[GenerationOptions], *, room: int
    ) -> list[Generation]:
        """One greedy generation over ``requests`` (same limit, same image count), left-padded; each row keeps its
        reference as :meth:`generate` does (the prefill measures every row's familiarity evidence), with ``room``
        for the whole batch's."""
        start = time.perf_counter()
        image_rows = [self.images(r) for r in requests]
        inputs = self._encode_batch(
            [self._prompt(r) for r in requests], image_rows if image_rows[0] else None, pad=True
        )
        config, _ = self._generation_config(options[0])
        prompt_len = inputs["input_ids"].shape[1]
        mask = inputs.get("attention_mask")
        used = [prompt_len if mask is None else int(mask[row].sum()) for row in range(len(requests))]
        for tokens, opts in zip(used, options, strict=True):  # answer_each checked each alone; this never fires there
            self._check_length(tokens, opts.max_new_tokens)
        pads = [prompt_len - n for n in used]
        capture: _PrefillCapture | None = None
        try:
            with self._lock, torch.inference_mode():
                if self._kept.capacity:
                    with _PrefillCapture(self, inputs["input_ids"], pads) as capture:
                        out = self.model.generate(**inputs, generation_config=config)
                else:
                    out = self.model.generate(**inputs, generation_config=config)
        except _MODEL_ERRORS as exc:
            raise BackendError(f"{self.name}: batched generation failed: {exc}") from exc
        logits = torch.stack(out.logits, dim=1)
        eos = config.eos_token_id
        ends = {eos} if isinstance(eos, int) else set(eos or ())
        seconds = (time.perf_counter() - start) / len(requests)
        evidence = None if capture is None else capture.evidence

        results = []
        for row, (request, opts) in enumerate(zip(requests, options, strict=True)):
            ids = out.sequences[row, prompt_len:]
            stops = [k for k, token in enumerate(ids.tolist()) if token in ends]
            new_ids = ids[: stops[0] + 1] if stops else ids  # after its end a row is padding
            own_logits = logits[row, : new_ids.shape[0]]
            seed = self._sampling(opts)[2]
            generation = self._generation(new_ids, own_logits, used[row], config, opts, seed, seconds)
            alone = _row_inputs(inputs, row, pads[row], len(requests))
            if evidence is not None and alone is not None:
                self._keep(request, generation, evidence[row], own_logits, alone, inputs, room=room)
            results.append(generation)
        return results

    def _generation_config(self, options: GenerationOptions) -> tuple[Any, int]:
        """The model's generation config for ``options`` (greedy unless sampled), and the sampling seed."""
        do_sample, temperature, seed = self._sampling(options)
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = options.max_new_tokens or self.max_new_tokens
        config.stop_strings = [s for s in options.stop if self._can_stop_on(s)] or None  # + tokenizer, at the call
        config.output_logits, config.return_dict_in_generate = True, True
        config.do_sample = do_sample
        config.temperature = temperature if do_sample else None
        if not do_sample:
            config.top_p, config.top_k = None, None
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        # Image placeholders in an answer would break re-scoring (features and tokens would not match).
        config.suppress_tokens = sorted({*(config.suppress_tokens or ()), *self._placeholder_ids})
        return config, seed

    def _generation(
        self,
        new_ids: torch.Tensor,
        logits: torch.Tensor,
        prompt_len: int,
        config: Any,
        options: GenerationOptions,
        seed: int,
        seconds: float,
    ) -> Generation:
        """The ``Generation`` of answer tokens ``new_ids`` with their next-token ``logits``."""
        logprobs = token_logprobs(logits, new_ids).clamp_max(0.0)
        text = self._decode(new_ids.tolist())
        length = int(new_ids.shape[0]) >= config.max_new_tokens and not self._ended(new_ids.tolist(), config)
        return Generation(
            text=text,
            answer=final_answer(text),
            model=self.name,
            provider="transformers",
            token_ids=tuple(new_ids.tolist()),
            token_logprobs=tuple(logprobs.tolist()),
            usage=Usage(input_tokens=prompt_len, output_tokens=int(new_ids.shape[0])),
            seconds=seconds,
            finish_reason="length" if length else "stop",
            options=GenerationOptions(
                attempt=options.attempt,
                seed=seed,
                temperature=config.temperature if config.do_sample else 0.0,
                max_new_tokens=config.max_new_tokens,
                stop=options.stop,
            ),
        )

    def _prompt_evidence(
        self,
        prompt_ids: torch.Tensor,
        question: torch.Tensor,
        image: torch.Tensor,
        logits: torch.Tensor,
        features: torch.Tensor | None,
    ) -> dict[str, Any]:
        """Row 0's familiarity evidence (``TeacherForcedScores`` fields) from a forward pass over the prompt.

        ``logits``: ``(question tokens, vocab)``, the logits before each question token; ``features``: the
        hidden state ``FEATURE_LAYER`` at the prompt's positions (``None``: not measured), pooled over the
        question and over the images.
        """
        prompt_logprobs = token_logprobs(logits.float(), prompt_ids[question]).clamp_max(0.0)
        unknown_id = getattr(self.tokenizer, "unk_token_id", None)
        hidden = None if features is None else features.float()
        return {
            "prompt_logprobs": prompt_logprobs.cpu(),
            "prompt_unknown": None if unknown_id is None else int((prompt_ids[question] == unknown_id).sum()),
            "prompt_features": None if hidden is None or not question.numel() else hidden[question].mean(dim=0).cpu(),
            "image_features": None if hidden is None or not image.numel() else hidden[image].mean(dim=0).cpu(),
        }

    def reference(
        self, request: Request, generation: Generation, *, distributions: bool = False
    ) -> ReferenceScores | None:
        """Row 0 of ``generation``'s scoring pass, kept when this backend generated it for ``request`` (the same
        objects) among its last ``keep_references`` generations; ``None`` otherwise, or with ``distributions`` when
        the full distributions were not kept (``keep_distributions``)."""
        kept = self._kept.get(request, generation)
        if kept is None or (distributions and kept.distributions is None):
            return None
        return kept

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one backend per loaded model: the cache lives as long anyway)
    def _can_stop_on(self, stop: str) -> bool:
        """Whether generation can stop on ``stop``: transformers refuses a stop string that no token of the
        vocabulary can spell, and such a string is never generated, so it is left out (the chat model still ends
        its text at any stop string)."""
        from transformers import StopStringCriteria

        try:
            StopStringCriteria(self.tokenizer, [stop])
        except ValueError:
            return False
        return True

    def _ended(self, ids: list[int], config: Any) -> bool:
        """Whether generation ended on its own at the last token: an end-of-sequence token, or a stop string."""
        eos = config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        if ids and ids[-1] in eos_ids:
            return True
        stop_strings = config.stop_strings or ()
        if not stop_strings:
            return False
        # Stopped by a stop string: the last token completed it (it may run on past its end).
        text, before = self._decode(ids), self._decode(ids[:-1])
        return any(s in text and s not in before for s in stop_strings)

    async def agenerate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """The async twin of :meth:`generate` (runs in a worker thread; calls are serialised)."""
        return await asyncio.to_thread(self.generate, request, options)

    # -- teacher-forced scoring --------------------------------------------------------------------------------

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
        reference: ReferenceScores | None = None,
    ) -> TeacherForcedScores:
        """Log-probs of ``token_ids`` (a generated answer) teacher-forced under the original images and variants.

        ``variants[i]`` replaces the request's images (same count). Rows: 0 = original, ``1 + i`` = variant i,
        all in one forward pass. With ``distributions`` the full next-token distributions are reduced per row
        to entropy, top-2 margin and full-vocabulary KL(original || row), shapes ``(rows, tokens)``.

        With ``reference`` (what :meth:`reference` returned for the generation of ``token_ids``), row 0 and the
        familiarity evidence are taken from it and only the variants run through the model.
        """
        ids = list(token_ids)
        if not ids:
            raise BackendError("cannot score an empty answer (no token ids)")
        if reference is not None:
            return self._score_variants(request, ids, variants, distributions, reference)
        originals = self.images(request)
        for i, variant in enumerate(variants):
            if len(variant) != len(originals):
                raise BackendError(f"variant {i} has {len(variant)} images, the request has {len(originals)}")
        prompt = self._prompt(request)
        try:
            batch = self._encode_rows(prompt, [originals, *variants])
            self._check_length(int(batch["input_ids"].shape[1]), len(ids))
            answer = torch.tensor(ids, device=self.device)
            forced = self._append_answer(batch, answer[:-1])
            prompt_ids = batch["input_ids"][0]
            question, image = self._prompt_positions(prompt_ids)
            # Logits only where they are read: before each question token (its own teacher-forced log-prob) and
            # before each answer token; never the (tokens, vocab) logits of the image positions.
            first_answer = prompt_ids.shape[0] - 1
            keep = torch.cat([question - 1, torch.arange(first_answer, first_answer + len(ids), device=self.device)])
            with self._lock, torch.inference_mode():
                # No KV cache: one pass reads nothing back, so building it would only cost a copy per layer.
                out = self.model(**forced, logits_to_keep=keep, use_cache=False, output_hidden_states=True)
        except GuardrailError:
            raise
        except _MODEL_ERRORS as exc:
            raise BackendError(f"{self.name}: teacher-forced scoring failed: {exc}") from exc
        scores = self._reduce(out.logits[:, question.numel() :], answer, distributions)
        features = None if out.hidden_states is None else out.hidden_states[FEATURE_LAYER][0]
        evidence = self._prompt_evidence(prompt_ids, question, image, out.logits[0, : question.numel()], features)
        return dataclasses.replace(scores, **evidence)

    def _score_variants(
        self,
        request: Request,
        ids: list[int],
        variants: Sequence[Sequence[Image.Image]],
        distributions: bool,
        reference: ReferenceScores,
    ) -> TeacherForcedScores:
        """``score`` with row 0 from ``reference``: one forward pass over the variant rows alone (no hidden states,
        logits only before the answer tokens), reduced against the kept original distributions."""
        kept = self._checked_reference(request, ids, variants, distributions, reference)
        if not variants:
            return self._with_row_0(None, kept, len(ids), distributions)
        return self._score_together([(kept, *self._variant_rows(request, ids, variants, kept))], distributions)[0]

    def score_batch(self, items: Sequence[ScoringItem], *, distributions: bool = False) -> list[TeacherForcedScores]:
        """:meth:`score` of several answers (``BatchScoringBackend``): the variant rows of every item whose row 0
        this backend kept (``item.reference``) run together, each row its own prompt and answer, right-padded into
        one forward pass (one per group of rows whose image inputs stack: same shapes past the first dimension);
        items without a reference or without variants are scored alone. ``BackendError`` when any item cannot be
        scored (the caller then scores them one by one)."""
        results: dict[int, TeacherForcedScores] = {}
        groups: dict[tuple[object, ...], list[tuple[int, _VariantRows]]] = {}
        for i, item in enumerate(items):
            ids = list(item.token_ids)
            if item.reference is None or not item.variants or not ids:
                results[i] = self.score(
                    item.request, ids, item.variants, distributions=distributions, reference=item.reference
                )
                continue
            kept = self._checked_reference(item.request, ids, item.variants, distributions, item.reference)
            forced, first_answer = self._variant_rows(item.request, ids, item.variants, kept)
            groups.setdefault(_stack_key(forced), []).append((i, (kept, forced, first_answer)))
        for members in groups.values():
            scored = self._score_together([rows for _, rows in members], distributions)
            results.update((i, scores) for (i, _), scores in zip(members, scored, strict=True))
        return [results[i] for i in range(len(items))]

    def _score_together(self, members: list[_VariantRows], distributions: bool) -> list[TeacherForcedScores]:
        """Each member's variant rows (their inputs stack) in one forward pass, right-padded, each reduced against
        its own kept row 0: only the logits before each member's answer tokens are computed."""
        batch = self._stack_padded([forced for _, forced, _ in members])
        spans = [torch.arange(first, first + len(kept.token_ids), device=self.device) for kept, _, first in members]
        keep = torch.unique(torch.cat(spans))
        logits = self._forward_answers(batch, keep)
        out, row = [], 0
        for (kept, forced, _), span in zip(members, spans, strict=True):
            rows = forced["input_ids"].shape[0]
            own = logits[row : row + rows, torch.searchsorted(keep, span)]
            row += rows
            answer = torch.tensor(kept.token_ids, device=self.device)
            original = kept.distributions if distributions else None
            varied = self._reduce(own, answer, distributions, reference=original)
            out.append(self._with_row_0(varied, kept, len(kept.token_ids), distributions))
        return out

    def _checked_reference(
        self,
        request: Request,
        ids: list[int],
        variants: Sequence[Sequence[Image.Image]],
        distributions: bool,
        reference: ReferenceScores,
    ) -> _KeptReference:
        """``reference`` when it is this backend's, for ``ids``, with what ``distributions`` needs, and the variants
        have the request's image count; ``BackendError`` naming what does not fit otherwise."""
        if not isinstance(reference, _KeptReference) or reference.prompt_inputs is None:
            raise BackendError("`reference` must be what this backend's `reference` returned")
        if tuple(ids) != reference.token_ids:
            raise BackendError("`reference` was kept for another answer than `token_ids`")
        if distributions and reference.distributions is None:
            raise BackendError("`reference` holds no full distributions (the backend's `keep_distributions` is off)")
        n_images = len(request.images)
        for i, variant in enumerate(variants):
            if len(variant) != n_images:
                raise BackendError(f"variant {i} has {len(variant)} images, the request has {n_images}")
        return reference

    def _variant_rows(
        self, request: Request, ids: list[int], variants: Sequence[Sequence[Image.Image]], reference: _KeptReference
    ) -> tuple[dict[str, torch.Tensor], int]:
        """The variant rows teacher-forced on the answer ``ids`` (prompt + answer but its last token), and the
        position whose logits predict the first answer token."""
        try:
            batch = self._encode_variants(request, reference, [list(v) for v in variants])
        except GuardrailError:
            raise
        except _MODEL_ERRORS as exc:
            raise BackendError(f"{self.name}: teacher-forced scoring failed: {exc}") from exc
        answer = torch.tensor(ids, device=self.device)
        return self._append_answer(batch, answer[:-1]), batch["input_ids"].shape[1] - 1

    def _forward_answers(self, batch: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """The logits at positions ``keep`` of one forward pass over ``batch`` (no cache, no hidden states)."""
        try:
            with self._lock, torch.inference_mode():
                out = self.model(**batch, logits_to_keep=keep, use_cache=False)
        except _MODEL_ERRORS as exc:
            raise BackendError(f"{self.name}: teacher-forced scoring failed: {exc}") from exc
        logits: torch.Tensor = out.logits
        return logits

    def _stack_padded(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Several items' rows as one batch: per-token inputs right-padded to the longest row (masked out, so each
        row's own positions see exactly what they see alone), every other input concatenated row after row."""
        if len(parts) == 1:
            return parts[0]
        length = max(part["input_ids"].shape[1] for part in parts)
        if "attention_mask" not in parts[0] and any(part["input_ids"].shape[1] != length for part in parts):
            raise BackendError(f"{self.name}: rows of different lengths cannot be batched without an attention mask")
        pad_id = self.tokenizer.pad_token_id or 0
        batch: dict[str, torch.Tensor] = {}
        for key in parts[0]:
            values = [part[key] for part in parts]
            if key in _SEQUENCE_KEYS:
                fill = pad_id if key == "input_ids" else 0
                values = [
                    torch.nn.functional.pad(v, (0, length - v.shape[1]), value=fill) if v.shape[1] < length else v
                    for v in values
                ]
            batch[key] = torch.cat(values, dim=0)
        return batch

    @staticmethod
    def _with_row_0(
        varied: TeacherForcedScores | None, reference: _KeptReference, tokens: int, distributions: bool
    ) -> TeacherForcedScores:
        """The variants' rows (``None``: no variants) under row 0 taken from ``reference``."""
        original = reference.scores
        rows = [original.token_logprobs] if varied is None else [original.token_logprobs, varied.token_logprobs]
        scores = dataclasses.replace(original, token_logprobs=torch.cat(rows))
        if not distributions:
            return scores
        kept = reference.distributions
        assert kept is not None
        # Row 0's reductions, as _reduce computes them on the original row (its KL to itself is 0).
        first = (entropy(kept).cpu(), top2_margin(kept).cpu(), torch.zeros(tokens))
        rest = (None, None, None) if varied is None else (varied.entropy, varied.margin, varied.kl_full)
        ent, margin, kl = (
            torch.stack([head]) if tail is None else torch.cat([head.unsqueeze(0), tail])
            for head, tail in zip(first, rest, strict=True)
        )
        return dataclasses.replace(scores, entropy=ent, margin=margin, kl_full=kl)

    def _encode_variants(
        self, request: Request, reference: _KeptReference, variants: list[list[Image.Image]]
    ) -> dict[str, torch.Tensor]:
        """The variant rows' inputs, each the kept prompt with a variant's pixels.

        The prompt's token ids, masks and image grids are generation's own (``reference.prompt_inputs``), so only
        the image processor runs, on the variants' images. That is used for a row shape (rows x images) once it
        was seen to give exactly what the full processor gives (checked on the first call of each shape, which
        uses the full processor); otherwise, or when a variant's image grid differs from the original's, the full
        processor encodes the rows, and rows that tokenise otherwise than the original are refused.
        """
        assert reference.prompt_inputs is not None
        shape = (len(variants), len(variants[0]))
        alone = self._encode_pixels(reference, variants) if self._pixels_alone.get(shape, True) else None
        if alone is not None and self._pixels_alone.get(shape):
            return alone
        batch = self._encode_rows(self._prompt(request), variants)
        if shape not in self._pixels_alone:
            self._pixels_alone[shape] = alone is not None and _same_inputs(alone, batch)
        prompt_ids = reference.prompt_inputs["input_ids"]
        if batch["input_ids"].shape[1] != prompt_ids.shape[1] or not bool((batch["input_ids"] == prompt_ids).all()):
            raise BackendError(
                "the image variants tokenise differently from the original (another size or tile count); "
                "variants must keep the model-resolution image size"
            )
        return batch

    def _encode_pixels(
        self, reference: _KeptReference, variants: list[list[Image.Image]]
    ) -> dict[str, torch.Tensor] | None:
        """The kept prompt inputs, one row per variant, with the image processor's output on the variants;
        ``None`` when that cannot make the rows (no image processor, a pixel input it does not make, or integer
        image inputs, e.g. a grid, that differ from the original's)."""
        assert reference.prompt_inputs is not None
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is None:
            return None
        try:
            processed = image_processor(images=variants, return_tensors="pt")
        except _MODEL_ERRORS:
            return None
        rows = len(variants)
        pixels = {k: v for k, v in processed.items() if isinstance(v, torch.Tensor)}
        if not reference.pixel_keys <= set(pixels):
            return None
        batch: dict[str, torch.Tensor] = {}
        for key, value in reference.prompt_inputs.items():
            repeated = value.repeat(rows, *([1] * (value.dim() - 1)))
            if key in pixels and not torch.equal(pixels[key].to(value.device, value.dtype), repeated):
                return None
            batch[key] = repeated
        for key, value in pixels.items():
            if key not in batch:
                if not value.is_floating_point():
                    return None
                batch[key] = value.to(self.device, self.model.dtype)
        return batch

    def _prompt_positions(self, prompt_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of the question text (after the last image, special tokens left out) and of the images.

        The question positions start at 1 at the earliest (position 0 has no context to be predicted from).
        """
        image_ids, placeholder_ids, hidden_ids = (t.to(prompt_ids.device) for t in self._position_tokens)
        image = torch.nonzero(torch.isin(prompt_ids, image_ids)).flatten()
        is_placeholder = torch.isin(prompt_ids, placeholder_ids)
        placeholders = torch.nonzero(is_placeholder).flatten()
        start = int(placeholders[-1]) + 1 if placeholders.numel() else 1
        positions = torch.arange(prompt_ids.shape[0], device=prompt_ids.device)
        hidden = torch.isin(prompt_ids, hidden_ids)
        question = positions[(positions >= start) & ~hidden & ~is_placeholder]
        return question, image

    def _encode_rows(self, prompt: str, image_rows: Sequence[Sequence[Image.Image]]) -> dict[str, torch.Tensor]:
        """The prompt with each row of images, stacked into one batch (row i = ``image_rows[i]``).

        One processor call encodes all rows (a call has a fixed cost, about half a millisecond on a CPU). Its
        result is used only when the rows came out alike: every integer tensor (token ids, masks, image grids and
        sizes) equal in each row, so that no row was padded or tokenised otherwise. Else each row is encoded
        alone, which is the same batch when rows are alike and names the variant that differs when not.
        """
        if len(image_rows) > 1 and image_rows[0]:
            try:
                batch = self._encode_batch([prompt] * len(image_rows), [list(row) for row in image_rows])
            except _MODEL_ERRORS:  # e.g. rows of different lengths cannot make one tensor
                batch = None
            if batch is not None and _rows_alike(batch, len(image_rows)):
                return batch
        return self._stack_rows([self._encode(prompt, images) for images in image_rows])

    @staticmethod
    def _stack_rows(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        reference = rows[0]["input_ids"]
        for i, row in enumerate(rows[1:], start=1):
            if not torch.equal(row["input_ids"], reference):
                raise BackendError(
                    f"image variant {i} tokenises differently from the original (another size or tile count); "
                    "variants must keep the model-resolution image size"
                )
        return {k: torch.cat([row[k] for row in rows], dim=0) for k in rows[0]}

    @staticmethod
    def _append_answer(batch: dict[str, torch.Tensor], answer: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = batch["input_ids"].shape[0]
        out = dict(batch)
        for key, fill in _SEQUENCE_KEYS.items():
            if key in batch:
                tail = answer if fill is None else torch.full_like(answer, fill)
                out[key] = torch.cat([batch[key], tail.to(batch[key].dtype).expand(rows, -1)], dim=1)
        return out

    @staticmethod
    def _reduce(
        logits: torch.Tensor, answer: torch.Tensor, distributions: bool, reference: torch.Tensor | None = None
    ) -> TeacherForcedScores:
        """``(rows, tokens, vocab)`` logits -> ``(rows, tokens)`` reductions.

        The full-vocabulary KL is to ``reference`` (``(tokens, vocab)`` log-distributions of the original images),
        by default row 0's own. One row at a time in float32, so at most two ``(tokens, vocab)`` float32
        distributions (the original's and the current row's) exist at once, whatever the number of variants.
        """
        own = reference is None
        original = torch.log_softmax(logits[0].float(), dim=-1) if reference is None else reference
        per_row: list[list[torch.Tensor]] = [[], [], [], []]
        for row in range(logits.shape[0]):
            dist = original if own and row == 0 else torch.log_softmax(logits[row].float(), dim=-1)
            per_row[0].append(dist.gather(-1, answer.unsqueeze(-1)).squeeze(-1).clamp_max(0.0))
            if distributions:
                per_row[1].append(entropy(dist))
                per_row[2].append(top2_margin(dist))
                per_row[3].append(full_kl(original, dist))
        ent, margin, kl = (torch.stack(values).cpu() if values else None for values in per_row[1:])
        return TeacherForcedScores(token_logprobs=torch.stack(per_row[0]).cpu(), entropy=ent, margin=margin, kl_full=kl)
