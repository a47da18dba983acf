"""Shared fixtures: tiny random models of each supported family, built once per session."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from guardrail import Request
from guardrail.backends.transformers import TransformersBackend
from tests.support.tiny_vlms import BUILDERS


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A 50 x 40 noise image: not square and not at any model's resolution."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(40, 50, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def question(photo: Image.Image) -> Request:
    return Request.from_question("What colour is the shape?", [photo])


@pytest.fixture(scope="session", params=sorted(BUILDERS))
def family_backend(request: pytest.FixtureRequest) -> TransformersBackend:
    model, processor = BUILDERS[request.param]()
    return TransformersBackend(model, processor, device="cpu", max_new_tokens=12, name=request.param)


@pytest.fixture(scope="session")
def llava_backend() -> TransformersBackend:
    model, processor = BUILDERS["llava"]()
    return TransformersBackend(model, processor, device="cpu", max_new_tokens=12, name="llava")
