"""The images of an escalation, named in its review payload by a reference and a content hash, never inlined large.

A reviewer must see the picture the model was asked about, but an interrupt payload is saved in every checkpoint
write and printed by ``guardrail escalations list --json``: it must not carry megabytes of base64. So each image of
an escalation becomes a small JSON reference (:func:`image_reference`):

- ``ref``: what a reviewer's tool can open: the path or URL as the request gave it, the path of the stored copy of
  an inline image, a ``data:`` URL for a small inline image when there is no store, or ``None``;
- ``sha256`` of the image's bytes (``None`` for a remote URL: guardrail never fetches one), ``mime_type`` and
  ``size`` (bytes); ``note`` says why an image has no ``ref``, or could not be read or stored.

Inline (base64) images are written once to an :class:`ImageStore`: a folder of files named by the SHA-256 of their
bytes (``ab/ab12….png``), each written atomically and never rewritten, so an image asked about twice is stored
once. ``guardrail_graph`` keeps its store next to a SQLite checkpoint database (``agent.sqlite`` ->
``agent.sqlite.images/``, :func:`store_for_checkpointer`). A PostgreSQL database has no "beside": agents that
checkpoint there pass ``image_store=`` (a folder every reviewer can read, e.g. a shared mount), or only images up to
:data:`INLINE_LIMIT` reach the reviewer (inline, in the database). The review page serves an image only when its
hash is in a pending escalation and the bytes it reads still have that hash; ``guardrail escalations serve
--images DIR`` also looks for it by hash in a store mounted at another path on the reviewer's machine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ImageError
from ..image_refs import MAX_IMAGE_BYTES, data_url, is_data_url, mime_type_of, open_image_file, read_image
from ..image_refs import local_path as local_path  # re-exported: the reader of recorded references lived here
from ..types import ImageBlock

__all__ = [
    "INLINE_LIMIT",
    "ImageStore",
    "image_reference",
    "is_sha256",
    "local_path",
    "sha256_of_file",
    "store_for_checkpointer",
]

logger = logging.getLogger(__name__)

INLINE_LIMIT = 32 * 1024
"""The largest image (encoded bytes) a payload carries inline, as a ``data:`` URL, when there is no store."""

_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp", "image/bmp": ".bmp"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


def is_sha256(value: object) -> bool:
    """True for a SHA-256 hex digest in lower case (64 characters)."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


class ImageStore:
    """A folder of image files named by the SHA-256 of their bytes.

    >>> import tempfile
    >>> store = ImageStore(tempfile.mkdtemp())
    >>> path = store.put(b"not really a png", "image/png")
    >>> path.name.endswith(".png"), path == store.put(b"not really a png", "image/png")
    (True, True)
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r})"

    @classmethod
    def beside(cls, database: str | Path) -> ImageStore:
        """The store kept next to a database file: ``agent.sqlite`` -> ``agent.sqlite.images/``."""
        path = Path(database).expanduser().resolve()
        return cls(path.with_name(path.name + ".images"))

    def path_for(self, sha256: str, mime_type: str | None) -> Path:
        """Where the image with this hash and type is (or would be) stored."""
        if not is_sha256(sha256):
            raise ValueError(f"`sha256` must be 64 lower-case hex digits, got {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}{_SUFFIXES.get(mime_type or '', '.img')}"

    def put(self, data: bytes, mime_type: str | None) -> Path:
        """Store ``data`` unless it is stored already; its path. ``OSError`` when it cannot be written."""
        path = self.path_for(hashlib.sha256(data).hexdigest(), mime_type)
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)  # atomic: a reader never sees half a file
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


def store_for_checkpointer(checkpointer: object) -> ImageStore | None:
    """The store beside a ``SqliteSaver``'s database file; ``None`` for an in-memory database or any other
    checkpointer (a ``PostgresSaver`` has no file to keep images beside: pass ``image_store=`` instead)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    if not isinstance(checkpointer, SqliteSaver):
        return None
    try:
        with checkpointer.lock:
            rows = checkpointer.conn.execute("PRAGMA database_list").fetchall()
    except sqlite3.Error:  # a closed or broken connection: the graph itself will say so when it runs
        return None
    main = next((str(row[2]) for row in rows if row[1] == "main"), "")
    return ImageStore.beside(main) if main else None


def sha256_of_file(path: Path) -> tuple[str, int]:
    """The SHA-256 and size of an image file, read in chunks; ``ImageError`` when it is no regular file of at most
    ``MAX_IMAGE_BYTES`` (a device such as ``/dev/zero``, a pipe, or a file that is or grows too large: nothing
    blocks or reads on without end, see ``guardrail.image_refs.open_image_file``), ``OSError`` when it cannot be
    read."""
    file, _ = open_image_file(path)
    digest, size = hashlib.sha256(), 0
    with file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if size > MAX_IMAGE_BYTES:
                raise ImageError(f"{path}: grew past the limit of {MAX_IMAGE_BYTES:,} bytes for an image file")
    return digest.hexdigest(), size


def image_reference(image: ImageBlock, *, store: ImageStore | None) -> dict[str, Any]:
    """How a review payload names ``image`` (see the module docstring); never raises on a bad or unreadable image."""
    url = image.url or ""
    if image.base64 is not None or is_data_url(url):  # inline, or a data URL: read without opening any file
        what = "inline data" if image.base64 is not None else "data URL"
        try:
            found = read_image(image)
        except ImageError as exc:
            return _reference(None, None, image.mime_type, None, note=f"{what} cannot be read ({exc})")
        return _inline(found.data, found.mime_type, store)
    path = local_path(url)
    if path is None:
        return _reference(url, None, image.mime_type, None, note="remote URL: guardrail does not fetch it")
    try:
        sha, size = sha256_of_file(path)
    except ImageError as exc:  # missing, not a regular file (a device, a pipe), too large: said without the path
        reason = str(exc).removeprefix(f"{path}: ")
        return _reference(url, None, image.mime_type, None, note=f"cannot be read ({reason})")
    except OSError as exc:
        return _reference(url, None, image.mime_type, None, note=f"cannot be read ({exc.strerror or exc})")
    return _reference(url, sha, image.mime_type or mime_type_of(path), size)


def _inline(data: bytes, mime_type: str | None, store: ImageStore | None) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    mime = mime_type or "image/png"
    note = "no image store: pass image_store=... to keep larger images"
    if store is not None:
        try:
            return _reference(str(store.put(data, mime)), sha, mime, len(data))
        except OSError as exc:
            logger.warning("guardrail: cannot store an escalated image in %s: %s", store.root, exc)
            note = f"could not be stored in {store.root} ({exc.strerror or exc})"
    if len(data) <= INLINE_LIMIT:
        return _reference(data_url(data, mime), sha, mime, len(data))
    return _reference(None, sha, mime, len(data), note=note)


def _reference(
    ref: str | None, sha256: str | None, mime_type: str | None, size: int | None, *, note: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"ref": ref, "sha256": sha256, "mime_type": mime_type, "size": size}
    if note:
        out["note"] = note
    return out
