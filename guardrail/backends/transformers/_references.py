"""Kept references for the transformers backend: row 0 of an answer's scoring pass, measured during generation.

``score(..., reference=...)`` runs only the variant rows when row 0 was kept from generation itself: the answer
tokens' log-probs (and, with ``keep_distributions``, their full distributions) are generation's own logits, and the
familiarity evidence comes from generation's own prefill forward pass, which ``PrefillCapture`` (a hook, for that
one pass) asks for the logits before each question token and the hidden states: no extra forward pass.
``KeptReferences`` keeps the last ``keep_references`` generations' references (a few kilobytes each, plus
``(tokens, vocab)`` float32 on the model's device each with ``keep_distributions``), each dropped with its
``Generation``.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...types import Generation, Request
from ..base import ReferenceScores, TeacherForcedScores
from ..logits import token_logprobs
from ._encoding import PromptEncoding

__all__ = ["FEATURE_LAYER", "KeptReference", "KeptReferences", "PrefillCapture", "ReferenceKeeping", "row_inputs"]

FEATURE_LAYER = 0
"""Which hidden state the image features are pooled from: 0 = the model's input embeddings, where the projected
vision-encoder output stands at the image positions."""


def row_inputs(
    batch: dict[str, torch.Tensor], row: int, pad: int, rows: int, *, prefix: int = 0
) -> dict[str, torch.Tensor] | None:
    """Row ``row``'s integer inputs of a left-padded ``rows``-row batch as encoding its prompt alone gives them:
    per-token tensors without the row's ``pad`` positions (nor its last ``prefix`` positions, an assistant prefix
    that belongs to the answer), per-row and per-image tensors (images row after row) the row's own part; ``None``
    for a tensor of another layout."""
    length = batch["input_ids"].shape[1]
    out: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        if value.is_floating_point():
            continue
        if value.dim() >= 2 and value.shape[0] == rows and value.shape[1] == length:
            out[key] = value[row : row + 1, pad : length - prefix]
        elif value.dim() >= 1 and value.shape[0] % rows == 0:
            share = value.shape[0] // rows
            out[key] = value[row * share : (row + 1) * share]
        else:
            return None
    return out


@dataclass(frozen=True)
class KeptReference(ReferenceScores):
    """A reference as this backend keeps it, with the prompt it was measured on: generation's integer inputs
    (``prompt_inputs``: token ids, masks, image grids, ...; the variant rows must match them) and the names of its
    floating-point inputs (the pixels, which the variants replace)."""

    prompt_inputs: dict[str, torch.Tensor] | None = None
    pixel_keys: frozenset[str] = frozenset()


class PrefillCapture:
    """Hooks that make generation's own prefill forward pass also measure each row's familiarity evidence.

    While installed (``with``), the first forward pass of the model on this thread, when it is over the whole
    (left-padded) prompt batch, is asked for the logits before each row's question tokens besides the last
    position's (which generation reads as the first answer token's) and for the hidden states; from its output the
    evidence ``score`` measures on row 0 of each prompt is taken (``evidence``, one per row), and the pass goes on
    to generation unchanged. Later passes are untouched.

    ``prefixes``: how many of each row's last tokens are an assistant prefix, the answer's start that generation
    continues from (``GenerationOptions.assistant_prefix``). They are no part of the prompt whose evidence is
    measured; the logits before each of them are kept too (``prefix_logits``, ``(prefix tokens, vocab)`` per row),
    which give the prefix tokens their teacher-forced log-probs.
    """

    def __init__(
        self,
        backend: ReferenceKeeping,
        prompt_ids: torch.Tensor,
        pads: Sequence[int],
        prefixes: Sequence[int] | None = None,
    ) -> None:
        self.backend = backend
        self.shape = tuple(prompt_ids.shape)  # (rows, positions)
        last = self.shape[1] - 1
        self.prefixes = list(prefixes) if prefixes is not None else [0] * len(pads)
        spans = enumerate(zip(pads, self.prefixes, strict=True))
        self.rows = [prompt_ids[row, pad : last + 1 - p] for row, (pad, p) in spans]  # without padding and prefix
        self.pads = list(pads)
        self.positions = [backend._prompt_positions(ids) for ids in self.rows]
        wanted = torch.cat([question - 1 + pad for (question, _), pad in zip(self.positions, self.pads, strict=True)])
        device = prompt_ids.device
        self.prefix_positions = [torch.arange(last - p, last, device=device) for p in self.prefixes]
        keep = torch.unique(torch.cat([wanted, *self.prefix_positions]))  # sorted
        self.keep = torch.cat([keep[keep != last], torch.tensor([last], device=device)])
        self.evidence: list[TeacherForcedScores] | None = None
        self.prefix_logits: list[torch.Tensor] | None = None
        self._thread = threading.get_ident()
        self._handles: list[Any] = []

    def __enter__(self) -> PrefillCapture:
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
        self.prefix_logits = [
            output.logits[row, torch.searchsorted(self.keep, positions)]
            for row, positions in enumerate(self.prefix_positions)
        ]


class KeptReferences:
    """The references of the last ``capacity`` generations (or of a whole batch, when larger), each dropped as soon
    as its ``Generation`` is.

    An entry is found only for the very ``Generation`` object it was kept for, with the very ``Request`` it answered
    (a copy, or the same answer to another request, finds nothing: the caller then scores row 0 itself).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[weakref.ref[Generation], weakref.ref[Request], KeptReference]] = (
            OrderedDict()
        )
        self._lock = threading.RLock()  # re-entrant: a weakref callback may run while this thread holds it

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, request: Request, generation: Generation, reference: KeptReference, *, room: int = 0) -> None:
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

    def get(self, request: Request, generation: Generation) -> KeptReference | None:
        with self._lock:
            entry = self._entries.get(id(generation))
            if entry is None or entry[0]() is not generation or entry[1]() is not request:
                return None
            self._entries.move_to_end(id(generation))
            reference = entry[2]
        return reference if reference.token_ids == tuple(generation.token_ids) else None


class ReferenceKeeping(PromptEncoding):
    """Keeps each generation's row 0 (``reference``) and measures the familiarity evidence of a prompt."""

    keep_distributions: bool
    _kept: KeptReferences

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
        (``room``: see ``KeptReferences.put``)."""
        logprobs = torch.tensor(generation.token_logprobs, dtype=torch.float32).unsqueeze(0)
        kept = KeptReference(
            token_ids=generation.token_ids,
            scores=dataclasses.replace(evidence, token_logprobs=logprobs),
            distributions=torch.log_softmax(logits.float(), dim=-1) if self.keep_distributions else None,
            prompt_inputs=prompt_inputs,
            pixel_keys=frozenset(k for k, v in inputs.items() if v.is_floating_point()),
        )
        self._kept.put(request, generation, kept, room=room)
