"""The built-in zoom view provider."""

from __future__ import annotations

import pytest
from PIL import Image

from guardrail import ImageBlock, Request, ViewProviderError
from guardrail.images import decode_image
from guardrail.responses import majority_answer, percept_head
from guardrail.views import TileProvider, TilesProvider, ZoomProvider, tile_boxes, zoom_boxes


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


# ---------------------------------------------------------------------------------------------------------------
# Tiles


def test_tile_boxes_cover_the_image_in_a_square_grid() -> None:
    assert tile_boxes(256, 256, 4) == [(0, 0, 128, 128), (128, 0, 256, 128), (0, 128, 128, 256), (128, 128, 256, 256)]
    nine = tile_boxes(100, 50, 9)
    assert len(nine) == 9
    assert sum((r - left) * (b - t) for left, t, r, b in nine) == 100 * 50  # a partition: no gap, no overlap


@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 25, True])
def test_tile_boxes_refuse_a_count_that_is_no_grid(count: int) -> None:
    with pytest.raises(ValueError, match=r"`count` must be one of 4, 9, 16 \(a square grid\), got"):
        tile_boxes(64, 64, count)


def test_the_tiles_provider_crops_at_full_resolution_without_resizing() -> None:
    source = Image.new("RGB", (256, 128), (255, 255, 255))
    source.paste((255, 0, 0), (0, 0, 8, 8))  # a small red square in the top-left tile
    request = Request.from_question("how many shapes are there?", [source])
    provider = TilesProvider()
    assert isinstance(provider, TileProvider)
    tiling = provider.tiles(request, 4)
    assert (tiling.width, tiling.height) == (256, 128)
    assert [tile.box for tile in tiling.tiles] == tile_boxes(256, 128, 4)
    first = decode_image(tiling.tiles[0].image)
    assert first.size == (128, 64)
    assert first.getpixel((4, 4)) == (255, 0, 0)
    assert [decode_image(v).size for v in provider(request, 4)] == [(128, 64)] * 4


def test_the_tiles_provider_says_what_it_cannot_tile() -> None:
    with pytest.raises(ViewProviderError, match="tiles: the request has no image to tile"):
        TilesProvider().tiles(Request.from_question("q?"), 4)
    with pytest.raises(ViewProviderError, match="tiles: `count` must be one of 4, 9, 16"):
        TilesProvider().tiles(Request.from_question("q?", [Image.new("RGB", (8, 8))]), 2)


# ---------------------------------------------------------------------------------------------------------------
# What the remedies read from answers


def test_percept_head_keeps_or_replaces_the_vision_block() -> None:
    text = "<think><vision>I see a red circle.</vision><reasoning>red</reasoning></think> \\boxed{red}"
    assert percept_head(text) == "<think><vision>I see a red circle.</vision>"
    assert percept_head(text, "I see a blue square.") == "<think><vision>I see a blue square.</vision>"
    assert percept_head("no tags \\boxed{red}") is None
    assert percept_head("<vision>never closed") is None


@pytest.mark.parametrize(
    ("answers", "index"),
    [
        (["2", "3", "3"], 1),
        (["2", "3", "2", "3"], 0),  # a tie goes to the answer given first
        (["Red.", "blue", " red"], 0),  # compared as answers are graded
        ([None, None, "4"], 2),
        ([None, None], 0),
    ],
)
def test_majority_answer(answers: list[str | None], index: int) -> None:
    assert majority_answer(answers) == index


def test_majority_answer_needs_answers() -> None:
    with pytest.raises(ValueError, match="`answers` must hold at least one answer"):
        majority_answer([])
