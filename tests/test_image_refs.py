"""Image references to bytes, read in one place: inline data, data URLs (base64 or percent-encoded), files by path
or ``file://`` URL; remote and malformed references refused with an error naming the problem and where."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

import guardrail.types
from guardrail import ImageBlock, ImageError, InputError, Request
from guardrail.image_refs import (
    MAX_IMAGE_BYTES,
    data_url,
    image_bytes,
    is_data_url,
    local_path,
    parse_data_url,
    read_image,
    read_image_file,
)
from guardrail.images import decode_image

# Bytes that are not UTF-8: a percent-encoded data URL decoded as text would garble them.
NOT_UTF8 = bytes(range(256))


def png_bytes(colour: tuple[int, int, int] = (9, 8, 7)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_percent_encoded_data_url_keeps_bytes_that_are_not_utf8_exactly() -> None:
    url = "data:application/octet-stream," + quote(NOT_UTF8, safe="")
    parsed = parse_data_url(url)
    assert parsed.data == NOT_UTF8
    assert parsed.base64 is None
    assert parsed.mime_type == "application/octet-stream"
    assert image_bytes(url) == NOT_UTF8
    assert image_bytes(ImageBlock(url=url)) == NOT_UTF8
    assert ImageBlock.from_reference(url).data() == NOT_UTF8


def test_a_data_url_that_is_not_base64_is_accepted_and_decoded() -> None:
    png = png_bytes()
    url = "data:image/png," + quote(png, safe="")
    assert read_image(url).mime_type == "image/png"
    assert decode_image(url).getpixel((0, 0)) == (9, 8, 7)
    assert decode_image(ImageBlock(url=url), name="image 0").size == (4, 3)
    request = Request.from_question("q", [url])
    assert request.images[0] == ImageBlock.from_bytes(png, "image/png")


def test_a_base64_data_url_keeps_its_text_and_takes_percent_escapes_and_parameters() -> None:
    png = png_bytes()
    url = data_url(png, "image/png")
    assert url.startswith("data:image/png;base64,")
    parsed = parse_data_url(url)
    assert (parsed.data, parsed.mime_type, parsed.base64) == (png, "image/png", url.partition(",")[2])
    escaped = "DATA:Image/PNG;name=x.png;BASE64," + quote(url.partition(",")[2], safe="")
    assert parse_data_url(escaped).data == png
    assert parse_data_url(escaped).mime_type == "image/png"
    assert parse_data_url("data:;base64," + url.partition(",")[2]).mime_type is None


def test_a_file_url_and_a_plain_path_read_the_same_file(tmp_path: Path) -> None:
    png = png_bytes((1, 2, 3))
    path = tmp_path / "a b%.png"  # a space and a percent sign: escaped in the URL
    path.write_bytes(png)
    for reference in (str(path), path, path.as_uri(), "file://localhost" + quote(str(path))):
        found = read_image(reference)
        assert (found.data, found.mime_type) == (png, "image/png")
        assert decode_image(reference).getpixel((0, 0)) == (1, 2, 3)
        assert decode_image(ImageBlock(url=str(reference))).getpixel((0, 0)) == (1, 2, 3)
        assert ImageBlock.from_reference(reference).data() == png
    assert local_path(path.as_uri()) == path
    assert local_path(str(path)) == path


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_a_file_url_with_bytes_that_are_not_utf8_reads_that_file(tmp_path: Path) -> None:
    name = b"\xff\xfe.png"  # a file name that is not UTF-8 (POSIX file names are bytes)
    with open(os.fsencode(tmp_path) + b"/" + name, "wb") as file:
        file.write(png_bytes())
    url = tmp_path.as_uri() + "/" + quote(name)
    assert local_path(url) == tmp_path / os.fsdecode(name)
    assert image_bytes(url) == png_bytes()


def test_an_inline_block_and_bytes() -> None:
    png = png_bytes()
    block = ImageBlock.from_bytes(png, "image/jpeg")
    assert read_image(block).data == png
    assert read_image(block).mime_type == "image/jpeg"  # what the block says
    assert image_bytes(png) == png


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("data:image/png;base64", r"^image: data URL 'data:image/png;base64' has no ',' before its data$"),
        ("data:image/png;base64,@@@", r"^image: data URL: base64 data is not valid"),
        ("data:image/png,", r"^image: data URL 'data:image/png,' has no data after its ','$"),
        ("", r"^image: empty image reference \(expected a path, a file:// URL or a data: URL\)$"),
        ("https://example.com/cat.png", r"^image 'https://example.com/cat.png': remote URLs are not fetched"),
        ("s3://bucket/cat.png", "remote URLs are not fetched by guardrail; download the image"),
        ("file://server/share/cat.png", r"a file URL on another host \('server'\) is not read"),
        ("/nonexistent/cat.png", r"^/nonexistent/cat.png: no such file$"),
    ],
)
def test_a_malformed_or_unreadable_reference_is_an_image_error_naming_the_problem(reference: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        image_bytes(reference)
    with pytest.raises(ImageError, match=message.removeprefix("^image").removeprefix(":").lstrip()):
        decode_image(ImageBlock(url=reference) if reference else reference, name="image")
    assert issubclass(ImageError, InputError)


def test_errors_name_the_place_given() -> None:
    with pytest.raises(ImageError, match=r"^image 2: base64 data is not valid"):
        image_bytes(ImageBlock(base64="%%%"), name="image 2")
    with pytest.raises(ImageError, match=r"^image 2: image block has neither inline data \(base64\) nor a url$"):
        image_bytes(ImageBlock(), name="image 2")
    cut = r"^messages\[0\]: data URL 'data:image/png;base64AAAAAAAAAAAAAAAAAAA'\.\.\. has no ','"
    with pytest.raises(ImageError, match=cut):
        parse_data_url("data:image/png;base64" + "A" * 40, name="messages[0]")  # no ',', shown cut
    with pytest.raises(ImageError, match=r"^image: 'http://x' is not a data URL"):
        parse_data_url("http://x")


def test_references_are_told_apart() -> None:
    assert is_data_url("data:,x")
    assert is_data_url("DATA:image/png,x")
    assert not is_data_url("data.png")
    assert local_path("data:image/png;base64,AAAA") is None
    assert local_path("https://example.com/a.png") is None
    assert local_path("file://server/a.png") is None
    assert local_path("img:1.png") == Path("img:1.png")  # no "://": a path with a colon in its name
    assert local_path("~/a.png") == Path("~/a.png")  # taken as given, never expanded


def test_the_file_reader_is_still_importable_where_it_was() -> None:
    assert guardrail.types.read_image_file is read_image_file
    assert guardrail.types.MAX_IMAGE_BYTES == MAX_IMAGE_BYTES
