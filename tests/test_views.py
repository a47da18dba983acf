"""The built-in zoom view provider."""

from __future__ import annotations

import pytest
from PIL import Image

from guardrail import ImageBlock, Request, ViewProviderError
from guardrail.images import decode_image
from guardrail.views import ZoomProvider, zoom_boxes


def test_zoom_boxes_start_with_the_centre_then_quadrants() -> None:
    boxes = zoom_boxes(64, 64, 5)
    assert boxes[0] == (16, 16, 48, 48)
    assert boxes[1:] == [(0, 0, 32, 32), (32, 0, 64, 32), (0, 32, 32, 64), (32, 32, 64, 64)]
    with pytest.raises(ValueError, match="`count` must be an int >= 1, got 0"):
        zoom_boxes(64, 64, 0)


def test_zoom_returns_enlarged_tiles_of_the_first_image() -> None:
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 32, 32))  # top-left quadrant red
    request = Request.from_question("What is it?", [image])
    views = ZoomProvider()(request, 2)
    assert len(views) == 2
    assert all(isinstance(v, ImageBlock) for v in views)
    top_left = decode_image(views[1])
    assert top_left.size == (64, 64)
    assert top_left.getpixel((32, 32)) == (255, 0, 0)
    assert request.images[0] == Request.from_question("What is it?", [image]).images[0]  # input untouched


def test_zoom_without_an_image_says_so() -> None:
    with pytest.raises(ViewProviderError, match="no image"):
        ZoomProvider()(Request.from_question("What is it?"), 1)
