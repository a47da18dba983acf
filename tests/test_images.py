"""Safe image decoding: every malformed image becomes a clear ImageError."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from guardrail import ImageBlock, ImageError
from guardrail.images import decode_image, load_image


def png_bytes(size: tuple[int, int] = (16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decodes_an_inline_block_to_rgb() -> None:
    image = decode_image(ImageBlock.from_bytes(png_bytes()))
    assert image.mode == "RGB"
    assert image.size == (16, 16)
    assert image.getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a recognised image format"),
        (png_bytes()[:-30], "truncated or corrupt"),
    ],
)
def test_malformed_bytes_are_image_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_decompression_bombs_are_refused_before_decoding() -> None:
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(png_bytes((300, 300)), max_pixels=10_000)


def test_bad_base64_and_remote_url_blocks_are_image_errors() -> None:
    with pytest.raises(ImageError, match="base64"):
        decode_image(ImageBlock(base64="@@@not base64@@@", mime_type="image/png"))
    with pytest.raises(ImageError, match="remote URLs are not fetched by guardrail"):
        decode_image(ImageBlock(url="https://example.invalid/cat.png"))


def test_missing_file_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    path = tmp_path / "ok.png"
    path.write_bytes(png_bytes())
    assert load_image(path).size == (16, 16)
