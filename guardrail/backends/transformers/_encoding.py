"""Encoding for the transformers backend: requests into prompts and model inputs, answer tokens back into text.

``PromptEncoding`` renders a request with the processor's chat template, decodes its images safely, encodes one
prompt or several rows of images in one processor call, finds the question's and the images' positions in a
prompt, decodes answer tokens (structured-answer tags kept visible) and checks a prompt's length against the
model's positions before any forward pass.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ...errors import BackendError, InputError
from ...images import decode_image
from ...responses import token_char_offsets
from ...types import GenerationOptions, ImageBlock, Request, TextBlock
from .._vision_inputs import model_resolution
from ._state import MODEL_ERRORS, BackendState

__all__ = ["PromptEncoding"]

_TAG_TOKEN = re.compile(
    r"^\s*<\s*/?\s*(think|vision|reasoning|analysis|confidence|vision_confidence|reasoning_confidence)\s*>\s*$"
    r"|\\boxed",
    re.IGNORECASE,
)
"""Special tokens that are structured-answer tags, kept visible when decoding."""


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


class PromptEncoding(BackendState):
    """Requests into model inputs and answer tokens into text, for one model's processor and tokenizer."""

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

    def _prompt_and_prefix(self, request: Request, prefix: str | None) -> tuple[str, list[int]]:
        """The prompt text generation encodes (the chat prompt, followed by the assistant ``prefix`` when given) and
        the prefix's token ids (the answer's first tokens; none without a prefix)."""
        prompt = self._prompt(request)
        if prefix is None:
            return prompt, []
        return prompt + prefix, self._prefix_ids(prompt, prefix)

    def _prefix_ids(self, prompt: str, prefix: str) -> list[int]:
        """The token ids of an assistant ``prefix`` continued from after ``prompt``.

        Scoring appends an answer's token ids to the prompt's, so the prefix must tokenise after the prompt as it
        does alone: a ``BackendError`` when joining them merges tokens across the seam (the answer's ids would not
        be the prompt's continuation), or when the prefix holds an image placeholder.
        """

        def ids(text: str) -> list[int]:
            return [int(i) for i in self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]]

        alone = ids(prefix)
        if not alone or ids(prompt + prefix) != ids(prompt) + alone:
            raise BackendError(
                f"{self.name}: the assistant prefix {prefix[:40]!r} tokenises differently after the prompt than "
                "alone, so its tokens cannot be the answer's first tokens; start it at a token boundary (e.g. with "
                "a tag such as <vision>)"
            )
        if self._placeholder_ids.intersection(alone):
            raise BackendError(f"{self.name}: the assistant prefix {prefix[:40]!r} holds an image placeholder token")
        return alone

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
            except MODEL_ERRORS:  # e.g. rows of different lengths cannot make one tensor
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
        prompt, _ = self._prompt_and_prefix(request, None if options is None else options.assistant_prefix)
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
        except MODEL_ERRORS:  # a tokenizer that cannot count text alone: the exact count decides
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
