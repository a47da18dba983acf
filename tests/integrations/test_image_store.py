"""The image store and image references: content-addressed files, and what a payload says about each image."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from guardrail import ImageBlock
from guardrail.integrations import ImageStore
from guardrail.integrations.image_store import image_reference, is_sha256, local_path, store_for_checkpointer
from tests.support.integration import png_bytes

PNG = png_bytes()
SHA = hashlib.sha256(PNG).hexdigest()


def test_put_stores_once_by_content_hash(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    path = store.put(PNG, "image/png")
    assert path == tmp_path / "images" / SHA[:2] / f"{SHA}.png"
    assert path.read_bytes() == PNG
    mtime = path.stat().st_mtime_ns
    assert store.put(PNG, "image/png") == path
    assert path.stat().st_mtime_ns == mtime  # never rewritten
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert store.path_for(SHA, "image/jpeg").suffix == ".jpg"


def test_path_for_refuses_anything_but_a_hash(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`sha256` must be 64 lower-case hex digits, got '\.\./x'"):
        ImageStore(tmp_path).path_for("../x", "image/png")
    assert is_sha256(SHA)
    assert not is_sha256(SHA.upper())
    assert not is_sha256(SHA[:-1] + "/")


def test_a_sqlite_saver_on_a_file_has_a_store_beside_it(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "agent.sqlite", check_same_thread=False) as connection:
        store = store_for_checkpointer(SqliteSaver(connection))
    assert store is not None
    assert store.root == tmp_path / "agent.sqlite.images"
    assert store.root == ImageStore.beside(tmp_path / "agent.sqlite").root
    with sqlite3.connect(":memory:", check_same_thread=False) as memory:
        assert store_for_checkpointer(SqliteSaver(memory)) is None
    assert store_for_checkpointer(InMemorySaver()) is None
    assert store_for_checkpointer(None) is None


def test_references_of_each_kind_of_image(tmp_path: Path) -> None:
    stored = image_reference(ImageBlock.from_bytes(PNG), store=ImageStore(tmp_path))
    assert stored == {"ref": str(ImageStore(tmp_path).path_for(SHA, "image/png")), "sha256": SHA,
                      "mime_type": "image/png", "size": len(PNG)}  # fmt: skip
    inline = image_reference(ImageBlock.from_bytes(PNG), store=None)
    assert inline["ref"].startswith("data:image/png;base64,")
    assert inline["sha256"] == SHA
    file = tmp_path / "scene.png"
    file.write_bytes(PNG)
    for given in (str(file), file.as_uri()):
        assert image_reference(ImageBlock(url=given), store=None) == {
            "ref": given, "sha256": SHA, "mime_type": "image/png", "size": len(PNG)
        }  # fmt: skip
    remote = image_reference(ImageBlock(url="https://example.com/a.png"), store=None)
    assert remote == {"ref": "https://example.com/a.png", "sha256": None, "mime_type": None, "size": None,
                      "note": "remote URL: guardrail does not fetch it"}  # fmt: skip
    missing = image_reference(ImageBlock(url=str(tmp_path / "gone.png")), store=None)
    assert (missing["sha256"], missing["note"]) == (None, "cannot be read (no such file)")
    data_url = image_reference(ImageBlock(url=inline["ref"]), store=ImageStore(tmp_path))
    assert data_url == stored


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="POSIX devices and FIFOs")
def test_a_reference_to_a_device_or_a_fifo_is_noted_at_once_never_hashed_without_end(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    start = time.perf_counter()
    zero = image_reference(ImageBlock(url="/dev/zero"), store=None)
    pipe = image_reference(ImageBlock(url=str(tmp_path / "pipe.png")), store=None)
    assert time.perf_counter() - start < 1.0
    assert (zero["ref"], zero["sha256"], zero["size"]) == ("/dev/zero", None, None)
    assert zero["note"] == "cannot be read (is a character device, not an image file (only regular files are read))"
    assert pipe["sha256"] is None
    assert pipe["note"] == "cannot be read (is a pipe (FIFO), not an image file (only regular files are read))"


def test_a_store_that_cannot_be_written_degrades_to_a_reference_without_a_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    big = bytes(range(256)) * 200  # over the inline limit
    with caplog.at_level(logging.WARNING, logger="guardrail.integrations.image_store"):
        reference = image_reference(ImageBlock.from_bytes(big), store=ImageStore(blocker))
    assert reference["ref"] is None
    assert reference["sha256"] == hashlib.sha256(big).hexdigest()
    assert reference["note"].startswith(f"could not be stored in {blocker}")
    assert "cannot store an escalated image" in caplog.text


def test_local_path_reads_paths_and_file_urls_only(tmp_path: Path) -> None:
    assert local_path("a/b.png") == Path("a/b.png")
    assert local_path((tmp_path / "x y.png").as_uri()) == tmp_path / "x y.png"
    assert local_path("https://example.com/a.png") is None
    assert local_path("data:image/png;base64,AAAA") is None
