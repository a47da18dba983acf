"""Teacher-forced scoring for the transformers backend: an answer re-scored under its images and image variants.

``score`` runs all rows in one batched forward pass: each row is the same prompt + answer with other pixels; with
equal image sizes the rows tokenise identically, so no padding is needed and row 0 reproduces the generation's own
log-probs. Full next-token distributions are reduced right away (entropy, top-2 margin and KL to row 0, per
token), so the ``(rows, tokens, vocab)`` tensor never outlives the call. With a kept reference (row 0 from
generation itself) only the variant rows run, re-using generation's token ids so that only the image processor
runs on the variants; ``score_batch`` runs several answers' variant rows right-padded in one pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from PIL import Image

from ...errors import BackendError, GuardrailError
from ...types import Request
from ..base import ReferenceScores, ScoringItem, TeacherForcedScores
from ..logits import entropy, full_kl, top2_margin
from ._references import FEATURE_LAYER, KeptReference, ReferenceKeeping
from ._state import MODEL_ERRORS

__all__ = ["TeacherForcedScoring"]

_SEQUENCE_KEYS = {"input_ids": None, "attention_mask": 1, "mm_token_type_ids": 0, "token_type_ids": 0}
"""Per-token inputs extended by the answer tokens when teacher forcing, with the fill value (None: the ids)."""


def _same_inputs(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> bool:
    """Whether two model input dicts hold the same tensors (names, shapes, dtypes, values)."""
    return left.keys() == right.keys() and all(
        left[k].dtype == right[k].dtype and torch.equal(left[k], right[k]) for k in left
    )


def _stack_key(rows: dict[str, torch.Tensor]) -> tuple[object, ...]:
    """What rows must share to be stacked with others: their input names, and each non-per-token input's dtype and
    shape past the first dimension (pixels of one size, image grids of one width)."""
    return tuple(
        (key, value.dtype, () if key in _SEQUENCE_KEYS else tuple(value.shape[1:]))
        for key, value in sorted(rows.items())
    )


_VariantRows = tuple[KeptReference, dict[str, torch.Tensor], int]
"""One answer's variant rows to score: its kept row 0, the rows' model inputs, the position before its answer."""


class TeacherForcedScoring(ReferenceKeeping):
    """``score`` and ``score_batch`` over one model (``ScoringBackend``, ``BatchScoringBackend``)."""

    _pixels_alone: dict[tuple[int, int], bool]
    """Per row shape (rows x images): whether the image processor alone gives the full processor's rows."""

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
        except MODEL_ERRORS as exc:
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
    ) -> KeptReference:
        """``reference`` when it is this backend's, for ``ids``, with what ``distributions`` needs, and the variants
        have the request's image count; ``BackendError`` naming what does not fit otherwise."""
        if not isinstance(reference, KeptReference) or reference.prompt_inputs is None:
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
        self, request: Request, ids: list[int], variants: Sequence[Sequence[Image.Image]], reference: KeptReference
    ) -> tuple[dict[str, torch.Tensor], int]:
        """The variant rows teacher-forced on the answer ``ids`` (prompt + answer but its last token), and the
        position whose logits predict the first answer token."""
        try:
            batch = self._encode_variants(request, reference, [list(v) for v in variants])
        except GuardrailError:
            raise
        except MODEL_ERRORS as exc:
            raise BackendError(f"{self.name}: teacher-forced scoring failed: {exc}") from exc
        answer = torch.tensor(ids, device=self.device)
        return self._append_answer(batch, answer[:-1]), batch["input_ids"].shape[1] - 1

    def _forward_answers(self, batch: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """The logits at positions ``keep`` of one forward pass over ``batch`` (no cache, no hidden states)."""
        try:
            with self._lock, torch.inference_mode():
                out = self.model(**batch, logits_to_keep=keep, use_cache=False)
        except MODEL_ERRORS as exc:
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
        varied: TeacherForcedScores | None, reference: KeptReference, tokens: int, distributions: bool
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
        self, request: Request, reference: KeptReference, variants: list[list[Image.Image]]
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
        self, reference: KeptReference, variants: list[list[Image.Image]]
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
        except MODEL_ERRORS:
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
