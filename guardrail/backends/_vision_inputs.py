"""Image and prompt preparation for the transformers backend (its images are decoded by ``images.decode_image``).

- ``model_resolution``: the size an image processor resizes an image to, so that perturbations act on the pixels
  the vision encoder sees (a blackened patch is one encoder patch).
- ``TokenExpandingProcessor``: tokenizer + image processor for models whose full processor cannot be built here
  (Qwen2-VL's processor requires a video processor, which requires torchvision).
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image

from ..images import MAX_PIXELS

__all__ = ["DEFAULT_MAX_PIXELS", "TokenExpandingProcessor", "model_resolution"]

DEFAULT_MAX_PIXELS = MAX_PIXELS
"""Largest image accepted (width x height); larger ones are refused as possible decompression bombs."""


def _size_get(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule: both sides multiples of ``factor``, area within [min_pixels, max_pixels]."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def model_resolution(image: Image.Image, image_processor: Any) -> Image.Image:
    """``image`` resized (and centre-cropped where the processor crops) to what the vision encoder sees.

    Recognises the resize rules of the supported families: Qwen2-VL (``merge_size``: smart resize), CLIP-style
    (shortest edge, then centre crop), Idefics3 (longest edge) and fixed ``height``/``width``; anything else is
    returned unchanged (perturbations then act at the native resolution). Re-processing the result is a no-op
    resize for these rules, so the perturbed pixels are the pixels the encoder gets.
    """
    width, height = image.size
    size = getattr(image_processor, "size", None) or {}
    merge = getattr(image_processor, "merge_size", None)
    patch = getattr(image_processor, "patch_size", None)
    if merge and patch:
        lo = _size_get(size, "shortest_edge") or getattr(image_processor, "min_pixels", None) or 56 * 56
        hi = _size_get(size, "longest_edge") or getattr(image_processor, "max_pixels", None) or 28 * 28 * 1280
        h, w = _smart_resize(height, width, int(patch) * int(merge), int(lo), int(hi))
        return image.resize((w, h), Image.Resampling.BICUBIC)
    crop = getattr(image_processor, "crop_size", None)
    if getattr(image_processor, "do_center_crop", False) and crop:
        short = _size_get(size, "shortest_edge")
        if short:
            scale = short / min(width, height)
            image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)
        ch, cw = _size_get(crop, "height") or image.height, _size_get(crop, "width") or image.width
        left, top = (image.width - cw) // 2, (image.height - ch) // 2
        return image.crop((left, top, left + cw, top + ch))
    longest = _size_get(size, "longest_edge")
    max_image = getattr(image_processor, "max_image_size", None)
    if longest and max_image is not None and not getattr(image_processor, "do_image_splitting", True):
        longest = _size_get(max_image, "longest_edge") or longest
    if longest:
        scale = longest / max(width, height)
        return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
    fixed_h, fixed_w = _size_get(size, "height"), _size_get(size, "width")
    if fixed_h and fixed_w:
        return image.resize((fixed_w, fixed_h), Image.Resampling.BICUBIC)
    return image.copy()


class TokenExpandingProcessor:
    """A minimal multimodal processor from a tokenizer and a Qwen2-VL-style image processor.

    Does what ``Qwen2VLProcessor`` does for images: each image placeholder token in the prompt becomes
    ``grid_t * grid_h * grid_w / merge_size**2`` copies, and ``mm_token_type_ids`` marks them (1) for M-RoPE.
    Used when the model's own processor needs a video processor (and so torchvision).
    """

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        *,
        chat_template: str | None = None,
        image_token: str = "<|image_pad|>",
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token = image_token
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        """Render ``messages`` with the chat template (the tokenizer's when none was given)."""
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kwargs)

    def __call__(
        self, *, text: list[str], images: list[list[Image.Image]], return_tensors: str = "pt", **padding: Any
    ) -> Any:
        """Tokenise ``text`` (one prompt per row) with its row of ``images``; returns a ``BatchFeature``.

        ``padding`` (``padding=True, padding_side="left"``) goes to the tokenizer, for rows of different lengths."""
        from transformers import BatchFeature

        flat = [im for row in images for im in row]
        vision: dict[str, Any] = {}
        counts: list[int] = []
        if flat:
            vision = dict(self.image_processor(images=flat, return_tensors="pt"))
            merge = int(self.image_processor.merge_size) ** 2
            counts = [int(n) // merge for n in vision["image_grid_thw"].prod(-1).tolist()]
        expanded: list[str] = []
        for prompt in text:
            pieces = prompt.split(self.image_token)
            if len(pieces) - 1 > len(counts):
                raise ValueError(f"prompt has {len(pieces) - 1} image placeholders but {len(counts)} images")
            out = pieces[0]
            for piece in pieces[1:]:
                out += self.image_token * counts.pop(0) + piece
            expanded.append(out)
        if counts:
            raise ValueError(f"{len(counts)} images have no {self.image_token!r} placeholder in the prompt")
        encoded = self.tokenizer(expanded, return_tensors=return_tensors, add_special_tokens=False, **padding)
        encoded["mm_token_type_ids"] = (encoded["input_ids"] == self.image_token_id).long()
        return BatchFeature({**encoded, **vision})
