"""Odd images: high bit depths, huge-but-accepted sizes, transparency, and paths that are not image files (devices
such as ``/dev/zero``, FIFOs, sockets, files over the byte limit: refused before anything is read, never blocking).

Decoding is exercised directly (it is one piece) and through real guards over a real transformers backend (the
tiny random LLaVA; the reference model in the slow memory test), where a bad image must end in ``on_error``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import guardrail.images as images_module
from guardrail import Guard, ImageBlock, ImageError, Request
from guardrail.image_refs import MAX_IMAGE_BYTES, read_image_file
from guardrail.images import MAX_SIDE, decode_image, load_image
from guardrail.pretrained import load_guard
from tests.support.faults import png16, policy
from tests.support.tiny_vlms import save_tiny_llava

REPO = Path(__file__).resolve().parents[2]


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def grey(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(decode_image(encoded(image)))
    assert (pixels[..., 0] == pixels[..., 1]).all()
    return pixels[..., 0]


# -- bit depths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_16_bit_greyscale_is_scaled_not_clipped_to_white(dtype: str) -> None:
    ramp = (np.arange(256 * 4, dtype=np.int64).reshape(4, 256) * 64).astype(dtype)  # 0 .. 65472
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    pixels = grey(image)
    assert pixels.min() == 0
    assert pixels.max() == 255  # 65472 / 65535 * 255, rounded
    assert (np.diff(pixels.ravel().astype(int)) >= 0).all()  # the ramp survives
    assert len(np.unique(pixels)) > 200


def test_16_bit_greyscale_png_from_disk_is_mid_grey(tmp_path: Path) -> None:
    path = png16(tmp_path / "grey16.png", 32, 32, (0x8000,))
    with Image.open(path) as image:
        assert image.mode == "I;16"
    assert load_image(path).getpixel((3, 3)) == (128, 128, 128)


def test_16_bit_rgba_png_keeps_its_colour(tmp_path: Path) -> None:
    path = png16(tmp_path / "rgba16.png", 32, 32, (0xFFFF, 0x8000, 0x0000, 0xFFFF))
    assert load_image(path).getpixel((3, 3)) == (255, 128, 0)


def test_32_bit_integer_and_float_images_are_scaled() -> None:
    as_int = Image.fromarray(np.full((8, 8), 32768, dtype=np.int32))
    assert as_int.mode == "I"
    assert decode_image(encoded(as_int, "TIFF")).getpixel((0, 0)) == (128, 128, 128)
    as_float = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))
    assert as_float.mode == "F"
    assert decode_image(encoded(as_float, "TIFF")).getpixel((0, 0)) == (128, 128, 128)


# -- size and memory -------------------------------------------------------------------------------------------


def test_a_large_image_is_downscaled_at_decode_keeping_its_aspect(tmp_path: Path) -> None:
    path = png16(tmp_path / "wide.png", 5000, 1250, (0x0000, 0xFFFF, 0x0000, 0xFFFF), level=1)
    image = load_image(path)
    assert max(image.size) <= MAX_SIDE
    assert image.size == (1667, 417)  # reduced by 3 (ceil of 5000 / 2048)
    assert image.getpixel((100, 100)) == (0, 255, 0)


def test_a_large_jpeg_is_decoded_at_reduced_scale() -> None:
    data = encoded(Image.new("RGB", (6000, 3000), (10, 200, 30)), "JPEG")
    image = decode_image(data)
    assert max(image.size) <= MAX_SIDE
    assert abs(image.size[0] / image.size[1] - 2.0) < 0.01


def test_the_decoded_size_limit_names_the_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "MAX_DECODED_BYTES", 1 << 20)
    with pytest.raises(ImageError, match=r"image: 1000x1000 RGB pixels would take 4 MiB decoded, over the limit"):
        decode_image(encoded(Image.new("RGB", (1000, 1000))))


# The peak resident memory of this process (VmHWM; ru_maxrss would carry the parent's peak across exec), in MiB.
_HWM = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

_PEAK = (
    _HWM
    + """
import json, sys, time
from guardrail.images import load_image
before = hwm()
start = time.perf_counter()
image = load_image(sys.argv[1])
print(json.dumps({"size": image.size, "pixel": image.getpixel((9, 9)), "seconds": time.perf_counter() - start,
                  "peak_mib": hwm() - before}))
"""
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
@pytest.mark.slow
def test_the_issue_s_7900_px_16_bit_rgba_png_decodes_in_bounded_memory(tmp_path: Path) -> None:
    path = png16(tmp_path / "big.png", 7900, 7900, (0x8000, 0x4000, 0x2000, 0xFFFF), level=9)
    assert path.stat().st_size < 1_000_000  # a few hundred KB on disk, 62 megapixels decoded
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout)
    assert measured["size"] == [1975, 1975]
    assert measured["pixel"] == [128, 64, 32]
    assert measured["peak_mib"] < 500, measured
    print(measured)


_GUARD_PEAK = (
    _HWM
    + """
import json, sys
from PIL import Image
from guardrail import Request
from guardrail.pretrained import load_guard
from guardrail.types import MAX_IMAGE_BYTES, read_image_file
guard = load_guard()
guard.run(Request.from_question("What color is the shape?", [Image.new("RGB", (64, 64), (200, 30, 30))]))
before = hwm()
result = guard.run(Request.from_question("What color is the shape?", [sys.argv[1]]))
print(json.dumps({"status": result.status, "error": None if result.error is None else result.error.message,
                  "attempts": len(result.attempts),
                  "peak_mib": hwm() - before}))
"""
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
@pytest.mark.slow
def test_a_guarded_call_on_the_big_png_stays_under_500_mib(tmp_path: Path) -> None:
    path = png16(tmp_path / "big.png", 7900, 7900, (0x8000, 0x4000, 0x2000, 0xFFFF), level=1)
    out = subprocess.run(
        [sys.executable, "-c", _GUARD_PEAK, str(path)], capture_output=True, text=True, check=True, cwd=REPO
    )
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["error"] is None, measured
    assert measured["peak_mib"] < 500, measured
    print(measured)


# -- transparency ----------------------------------------------------------------------------------------------


def test_partial_transparency_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (8, 8), (200, 0, 0, 0))
    image.putpixel((0, 0), (200, 0, 0, 255))
    image.putpixel((1, 0), (200, 0, 0, 128))
    decoded = decode_image(encoded(image))
    assert decoded.getpixel((0, 0)) == (200, 0, 0)
    assert decoded.getpixel((5, 5)) == (255, 255, 255)  # not the hidden red under alpha 0
    assert decoded.getpixel((1, 0)) == (227, 127, 127)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_fully_transparent_image_is_refused(mode: str) -> None:
    if mode == "P":
        image = Image.new("P", (8, 8), 0)
        image.info["transparency"] = 0
    else:
        image = Image.new(mode, (8, 8), (200, 0, 0, 0) if mode == "RGBA" else (90, 0))
    with pytest.raises(ImageError, match=r"image: fully transparent \(every pixel has alpha 0\)"):
        decode_image(encoded(image))


def test_an_opaque_rgba_image_is_unchanged() -> None:
    assert decode_image(encoded(Image.new("RGBA", (8, 8), (1, 2, 3, 255)))).getpixel((4, 4)) == (1, 2, 3)


# -- what Request.from_question accepts ------------------------------------------------------------------------


def test_paths_that_are_not_image_files_are_image_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {
        str(tmp_path / "missing.png"): "missing.png: no such file",
        str(tmp_path): "is a directory, not an image file",
        str(tmp_path / "empty.png"): r"empty.png: empty \(0 bytes\)",
        "http://example.com/cat.png": "'http://example.com/cat.png': remote URLs are not fetched by guardrail",
        "https://example.com/cat.png": "remote URLs are not fetched",
        "s3://bucket/cat.png": "remote URLs are not fetched",
    }
    for reference, message in cases.items():
        with pytest.raises(ImageError, match=message):
            Request.from_question("q", [reference])
        with pytest.raises(ImageError, match=message):
            ImageBlock.from_path(reference)
        if "://" not in reference:
            with pytest.raises(ImageError, match=message):
                Request.from_question("q", [Path(reference)])


# -- paths that are not regular files: refused before anything is read, and nothing blocks -----------------------

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX devices, FIFOs and sockets")


def refused_at_once(reference: str | Path, message: str) -> None:
    """Every way of naming an image file refuses ``reference`` with ``message``, each within a second."""
    readers: list[Callable[[], object]] = [
        lambda: read_image_file(reference),
        lambda: load_image(reference),
        lambda: ImageBlock.from_path(reference),
        lambda: Request.from_question("q", [reference]),
        lambda: Request.from_question("q", [Path(reference).as_uri()]),
        lambda: decode_image(ImageBlock(url=str(reference)), name="image 0"),
        lambda: decode_image(ImageBlock(url=Path(reference).as_uri()), name="image 0"),
    ]
    for read in readers:
        start = time.perf_counter()
        with pytest.raises(ImageError, match=message):
            read()
        assert time.perf_counter() - start < 1.0


@POSIX
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_refused_without_reading_it(device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    refused_at_once(device, f"^{device}: is a character device, not an image file \\(only regular files are read\\)$")


@POSIX
def test_a_link_to_a_device_is_refused_naming_its_target(tmp_path: Path) -> None:
    (tmp_path / "cat.png").symlink_to("/dev/zero")
    refused_at_once(tmp_path / "cat.png", r"cat.png: is a character device \(a link to /dev/zero\), not an image file")


@contextmanager
def fifo(path: Path) -> Iterator[Path]:
    """A FIFO with no writer at ``path``; a reader that blocked on it anyway is released afterwards."""
    os.mkfifo(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):  # ENXIO: nobody is waiting to read, as it should be
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@POSIX
def test_a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer(tmp_path: Path) -> None:
    with fifo(tmp_path / "cat.png") as path:
        refused_at_once(path, r"cat.png: is a pipe \(FIFO\), not an image file")


@POSIX
def test_a_socket_and_a_directory_are_refused() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder, socket.socket(socket.AF_UNIX) as server:
        server.bind(str(Path(folder) / "s.png"))  # a short path: socket paths are limited to about 100 bytes
        refused_at_once(Path(folder) / "s.png", r"s.png: is a socket, not an image file")
        refused_at_once(folder, "is a directory, not an image file")


@POSIX
def test_a_path_swapped_for_a_fifo_after_it_was_looked_at_neither_blocks_nor_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    regular = tmp_path / "regular.png"
    regular.write_bytes(encoded(Image.new("RGB", (4, 4))))
    real_stat = os.stat
    # The first look sees a regular file; by the time it is opened the path is a FIFO with no writer.
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: real_stat(regular) if "cat" in str(path) else real_stat(path))
    with fifo(tmp_path / "cat.png") as path:
        start = time.perf_counter()
        with pytest.raises(ImageError, match=r"cat.png: is a pipe \(FIFO\), not an image file"):
            read_image_file(path)
        assert time.perf_counter() - start < 1.0


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as file:
        file.truncate(MAX_IMAGE_BYTES + 1)  # sparse: 256 MiB that take no disk and are never read
    start = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=r"big.png: is 268,435,457 bytes, over the limit of 268,435,456 bytes"):
            ImageBlock.from_path(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert time.perf_counter() - start < 1.0
    assert images_module.MAX_DECODED_BYTES == MAX_IMAGE_BYTES  # one limit for files and decoded pixels
    small = tmp_path / "small.png"
    small.write_bytes(b"x" * 11)
    with pytest.raises(ImageError, match=r"small.png: is 11 bytes, over the limit of 10 bytes for an image file"):
        read_image_file(small, max_bytes=10)
    assert read_image_file(small, max_bytes=11) == b"x" * 11


def test_a_file_that_grows_while_it_is_read_is_read_no_further_than_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "growing.png"
    path.write_bytes(b"x" * 5000)
    real_fstat = os.fstat

    def measured_early(fd: int) -> os.stat_result:  # the size it had when it was measured, before it grew
        fields = list(real_fstat(fd))
        fields[stat.ST_SIZE] = 100
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", measured_early)
    with pytest.raises(ImageError, match=r"growing.png: grew past the limit of 1,000 bytes"):
        read_image_file(path, max_bytes=1000)
    assert read_image_file(path, max_bytes=5000) == b"x" * 5000  # grown, but within the limit: read whole


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="a /proc file: regular, but of size 0")
def test_a_file_that_reports_no_size_is_read_bounded() -> None:
    assert b"VmHWM" in read_image_file("/proc/self/status")
    with pytest.raises(ImageError, match=r"/proc/self/status: grew past the limit of 100 bytes"):
        read_image_file("/proc/self/status", max_bytes=100)


def test_file_and_data_urls_are_read_locally(tmp_path: Path) -> None:
    data = encoded(Image.new("RGB", (4, 4), (9, 8, 7)))
    (tmp_path / "a b.png").write_bytes(data)
    from_file = Request.from_question("q", [(tmp_path / "a b.png").as_uri()])
    assert decode_image(from_file.images[0]).getpixel((0, 0)) == (9, 8, 7)
    url = "data:image/png;base64," + ImageBlock.from_bytes(data).base64  # type: ignore[operator]
    assert decode_image(Request.from_question("q", [url]).images[0]).getpixel((0, 0)) == (9, 8, 7)


# -- through a real guard ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_guard(tmp_path_factory: pytest.TempPathFactory) -> Guard:
    model_dir = save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
    # No artifact: raw scores, which this policy opts in to deciding on (accept_uncalibrated).
    return load_guard(model_dir, artifact=None, policy=policy(max_seconds=30, on_error="abstain"))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (ImageBlock.from_pil(Image.new("RGBA", (32, 32), (0, 0, 0, 0))), "fully transparent"),
        (ImageBlock(url="http://example.com/cat.png"), "remote URLs are not fetched by guardrail"),
        (ImageBlock(url="/no/such/image.png"), "no such file"),
        (ImageBlock(url="/"), "is a directory"),
    ],
)
def test_a_guard_fails_closed_on_a_bad_image(tiny_guard: Guard, block: ImageBlock, message: str) -> None:
    result = tiny_guard.run(Request.from_question("What colour?", [block]))
    assert result.status == "abstained"
    assert result.answer is None
    assert result.error is not None
    assert result.error.type == "ImageError"
    assert message in result.error.message


def test_a_guard_answers_on_a_16_bit_image(tiny_guard: Guard, tmp_path: Path) -> None:
    path = png16(tmp_path / "grey16.png", 64, 64, (0x4000,))
    result = tiny_guard.run(Request.from_question("What colour?", [path]))
    assert result.error is None, result.error
    assert result.attempts[0].generation is not None


def test_the_zoom_provider_works_on_a_big_image_without_holding_it(tmp_path: Path) -> None:
    from guardrail.views import ZoomProvider

    path = png16(tmp_path / "big.png", 4100, 4100, (0x8000, 0x8000, 0x8000, 0xFFFF), level=1)
    views = ZoomProvider()(Request.from_question("q", [path]), 2)
    assert [decode_image(v).size for v in views] == [(1367, 1367)] * 2
