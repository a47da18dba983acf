"""Re-scoring encodes all rows in one processor call: the same batch as one call per row, for every family."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from guardrail import Request
from guardrail.backends.transformers import TransformersBackend
from guardrail.backends.transformers._encoding import _rows_alike
from guardrail.confidence.perturb import perturb_image
from guardrail.errors import BackendError
from tests.support.tiny_vlms import BUILDERS


@pytest.mark.parametrize("n_images", [1, 2])
def test_one_call_gives_the_per_row_batch(family_backend: TransformersBackend, n_images: int) -> None:
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(40, 50, 3), dtype=np.uint8))
    images = [photo, photo.rotate(90, expand=True)][:n_images]
    request = Request.from_question("What colour is the shape?", images)
    backend = family_backend
    prompt = backend._prompt(request)
    at_model_size = backend.model_images(request)
    variants = [
        [perturb_image(im, "blackout", patch_size=backend.patch_size, seed=k) for im in at_model_size] for k in range(3)
    ]
    rows: list[Sequence[Image.Image]] = [backend.images(request), *variants]
    per_row = backend._stack_rows([backend._encode(prompt, row) for row in rows])
    one_call = backend._encode_batch([prompt] * len(rows), [list(row) for row in rows])
    assert _rows_alike(one_call, len(rows))  # so _encode_rows takes the one-call path
    batch = backend._encode_rows(prompt, rows)
    assert batch.keys() == per_row.keys()
    for key, value in per_row.items():
        assert torch.equal(batch[key], value), key


def test_rows_that_differ_fall_back_to_one_call_each() -> None:
    grid = torch.tensor([[1, 2, 2], [1, 4, 4]])
    assert not _rows_alike({"image_grid_thw": grid}, 2)
    assert _rows_alike({"image_grid_thw": grid[[0, 0]], "pixel_values": torch.rand(2, 3)}, 2)
    assert not _rows_alike({"input_ids": torch.ones(3, 4, dtype=torch.long)}, 2)  # not a multiple of the rows


def test_a_variant_of_another_size_is_still_named() -> None:
    model, processor = BUILDERS["qwen2_vl"]()
    backend = TransformersBackend(model, processor, device="cpu")
    photo = Image.new("RGB", (50, 40))
    request = Request.from_question("?", [photo])
    prompt = backend._prompt(request)
    with pytest.raises(BackendError, match="image variant 1 tokenises differently"):
        backend._encode_rows(prompt, [[photo], [Image.new("RGB", (112, 112))]])
