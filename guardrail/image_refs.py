"""Image references to bytes: the one place where what names an image is read.

A request names an image in one of these ways, and every reader in guardrail turns it into bytes here:

- **inline**: an :class:`~guardrail.ImageBlock`'s ``base64`` text (or bytes given directly);
- **a** ``data:`` **URL**, base64 (``data:image/png;base64,iVBOR...``) or percent-encoded (``data:image/png,%89PNG...``,
  RFC 2397): the bytes are the URL's bytes exactly, whatever they are (percent-escapes are bytes, never UTF-8 text);
- **a local file**: a plain path, or a ``file://`` URL (``file:///abs/path``, ``file://localhost/abs/path``), its
  percent-escapes decoded to the file system's bytes;
- **a remote URL** (``http(s)://``, ``s3://``, ...): never fetched. Every reader here refuses it with an
  :class:`~guardrail.ImageError`; a remote backend passes the URL on to its server as it is.

A string is a URL when it starts with ``data:`` or ``<scheme>://``; anything else is a path (taken as given: no
``~`` expansion, as a shell would have done that already). Files are read only by :func:`read_image_file` (over
:func:`open_image_file`): a regular file of at most ``MAX_IMAGE_BYTES``, looked at before it is opened, opened
non-blocking and checked again on the descriptor, read at most limit + 1 bytes; a device, a pipe, a socket, a
directory or an oversized file is an ``ImageError`` before anything is read or anything can block.

Every failure is an ``ImageError`` that names the reference and the problem. Turning the bytes into a picture is
:func:`guardrail.images.decode_image`, which takes any of these references through :func:`read_image`. This
module depends on nothing above :mod:`guardrail.errors`, so that the value types (``ImageBlock.from_path``,
``ImageBlock.from_reference``) read through it too.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote_to_bytes, urlsplit

from .errors import ImageError

__all__ = [
    "MAX_IMAGE_BYTES",
    "DataURL",
    "ImageData",
    "ImageSource",
    "data_url",
    "decode_base64",
    "image_bytes",
    "is_data_url",
    "local_path",
    "mime_type_of",
    "open_image_file",
    "parse_data_url",
    "read_image",
    "read_image_file",
]

MAX_IMAGE_BYTES = 256 * 1024 * 1024
"""The byte limit on an image: no image file larger than this is read, and no image is decoded into a pixel buffer
larger than this (``guardrail.images.MAX_DECODED_BYTES`` is this same limit)."""

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MIME_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


class ImageSource(Protocol):
    """What an :class:`~guardrail.ImageBlock` offers a reader: its inline base64 text, else its url."""

    @property
    def base64(self) -> str | None: ...

    @property
    def mime_type(self) -> str | None: ...

    @property
    def url(self) -> str | None: ...


@dataclass(frozen=True)
class DataURL:
    """A parsed ``data:`` URL: its media type (``None`` when it names none), its bytes, and its base64 text as given
    when it was base64-encoded (``None`` for a percent-encoded one), so that a caller can keep that text unchanged."""

    mime_type: str | None
    data: bytes
    base64: str | None


@dataclass(frozen=True)
class ImageData:
    """An image's encoded bytes and its media type where the reference says it (a block's ``mime_type``, a data
    URL's, a file's by its suffix; ``None`` when it does not)."""

    data: bytes
    mime_type: str | None


def is_data_url(reference: str) -> bool:
    """True for a ``data:`` URL (the scheme in any case)."""
    return reference[:5].lower() == "data:"


def data_url(data: bytes | str, mime_type: str | None = None) -> str:
    """A base64 ``data:`` URL of an image: ``data`` is its encoded bytes, or base64 text (kept as it is); the media
    type ``image/png`` when none is given."""
    text = base64.b64encode(data).decode("ascii") if isinstance(data, bytes) else data
    return f"data:{mime_type or 'image/png'};base64,{text}"


def decode_base64(text: str, *, name: str = "image") -> bytes:
    """The bytes of strict base64 ``text`` (no whitespace, correct padding); an ``ImageError`` naming ``name``."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"{name}: base64 data is not valid ({exc})") from exc


def parse_data_url(url: str, *, name: str = "image") -> DataURL:
    """The media type and bytes of a ``data:[<mime>][;<param>...][;base64],<data>`` URL (RFC 2397).

    Base64 data is decoded strictly (percent-escapes in it, as some encoders write ``+``, ``/`` and ``=``, are
    undone first); other data is percent-decoded to bytes exactly, so that an image's bytes survive whatever they
    are. No ``,``, data that is not valid base64, or no data at all, is an ``ImageError`` naming ``name``."""
    if not is_data_url(url):
        raise ImageError(f"{name}: {_shown(url)} is not a data URL (data:<mime>;base64,<data>)")
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise ImageError(f"{name}: data URL {_shown(url)} has no ',' before its data")
    params = [p.strip() for p in header.split(";")]
    encoded = len(params) > 1 and params[-1].lower() == "base64"
    mime = params[0].lower() or None
    text: str | None = None
    if encoded:
        text = unquote_to_bytes(payload).decode("ascii", "replace") if "%" in payload else payload
        data = decode_base64(text, name=f"{name}: data URL")
    else:
        data = unquote_to_bytes(payload)
    if not data:
        raise ImageError(f"{name}: data URL {_shown(url)} has no data after its ','")
    return DataURL(mime, data, text)


def local_path(reference: str) -> Path | None:
    """The file a reference names: a plain path or a local ``file://`` URL; ``None`` for a data URL, a remote URL,
    or a ``file://`` URL naming another host."""
    if is_data_url(reference):
        return None
    scheme = _URL.match(reference)
    if scheme is None:
        return Path(reference)
    if scheme.group(1).lower() != "file":
        return None
    parts = urlsplit(reference)
    if parts.netloc not in ("", "localhost"):
        return None
    return Path(os.fsdecode(unquote_to_bytes(parts.path)))


def mime_type_of(path: str | Path) -> str | None:
    """The media type of an image file by its suffix (``.png``, ``.jpg``, ...); ``None`` for any other suffix."""
    return _MIME_TYPES.get(Path(path).suffix.lower())


def read_image(
    source: ImageSource | bytes | str | os.PathLike[str], *, name: str = "image", max_bytes: int = MAX_IMAGE_BYTES
) -> ImageData:
    """The encoded bytes of any image reference (see the module docstring), and its media type where known.

    ``source`` is an image block (its inline data, else its url), encoded bytes, or a reference string or path.
    Files go through :func:`read_image_file` (``max_bytes``), whose errors name the path; every other failure
    (bad base64, a malformed data URL, a remote URL, a block with neither data nor url) names ``name``.
    """
    if isinstance(source, bytes):
        return ImageData(source, None)
    if isinstance(source, os.PathLike):
        path = Path(source)
        return ImageData(read_image_file(path, max_bytes=max_bytes), mime_type_of(path))
    if isinstance(source, str):
        return _read_reference(source, name=name, max_bytes=max_bytes)
    if source.base64 is not None:
        return ImageData(decode_base64(source.base64, name=name), source.mime_type)
    if not source.url:
        raise ImageError(f"{name}: image block has neither inline data (base64) nor a url")
    found = _read_reference(source.url, name=name, max_bytes=max_bytes)
    if is_data_url(source.url):  # the URL's own media type, then the block's; a file's by the block, then its suffix
        return ImageData(found.data, found.mime_type or source.mime_type)
    return ImageData(found.data, source.mime_type or found.mime_type)


def image_bytes(
    source: ImageSource | bytes | str | os.PathLike[str], *, name: str = "image", max_bytes: int = MAX_IMAGE_BYTES
) -> bytes:
    """The encoded bytes of any image reference: :func:`read_image` without the media type."""
    return read_image(source, name=name, max_bytes=max_bytes).data


def _read_reference(reference: str, *, name: str, max_bytes: int) -> ImageData:
    if not reference:
        raise ImageError(f"{name}: empty image reference (expected a path, a file:// URL or a data: URL)")
    if is_data_url(reference):
        parsed = parse_data_url(reference, name=name)
        return ImageData(parsed.data, parsed.mime_type)
    path = local_path(reference)
    if path is None:
        if urlsplit(reference).scheme.lower() == "file":
            raise ImageError(
                f"{name} {_shown(reference)}: a file URL on another host ({urlsplit(reference).netloc!r}) is not "
                "read; a local file URL is file:///absolute/path"
            )
        raise _remote(reference, name)
    return ImageData(read_image_file(path, max_bytes=max_bytes), mime_type_of(path))


def _remote(reference: str, name: str) -> ImageError:
    return ImageError(
        f"{name} {reference!r}: remote URLs are not fetched by guardrail; download the image and pass its bytes, "
        "a PIL image or a local path"
    )


def _shown(text: str) -> str:
    """``text`` as an error shows it: quoted, cut after 40 characters (a data URL may be megabytes long)."""
    return repr(text) if len(text) <= 40 else f"{text[:40]!r}..."


# -- files: regular ones only, bounded, never blocking -------------------------------------------------------------

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_a_regular_file(path: Path, mode: int) -> str | None:
    """Why the file with ``mode`` is no image file (a directory, a device, a pipe, ...); ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    return f"{path}: is {kind}{link}, not an image file (only regular files are read)"


def _too_large(path: Path, size: int, max_bytes: int, *, grew: bool = False) -> str:
    what = "grew past" if grew else f"is {size:,} bytes, over"
    mib = f" ({max_bytes / 2**20:.0f} MiB)" if max_bytes >= 2**20 else ""
    return f"{path}: {what} the limit of {max_bytes:,} bytes{mib} for an image file"


def open_image_file(path: str | Path, *, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[io.FileIO, int]:
    """An image file opened for reading, and its size: only a regular file of at most ``max_bytes`` bytes.

    Anything else is an ``ImageError`` naming the path and the problem, before anything is read or anything can
    block: a missing or unreadable file, a directory, a device (``/dev/zero``, ``/dev/urandom``, a disk), a pipe
    (FIFO), a socket (symbolic links are followed, so a link to any of these too), or a file over ``max_bytes``.
    The path is looked at first without opening it (opening a FIFO waits for a writer, opening a device may act on
    it), then opened non-blocking and checked again on the open descriptor (``fstat``), so a path swapped for a
    FIFO or a device in between can neither block nor be read. The caller closes the file, and reads at most
    ``max_bytes + 1`` bytes from it, so that a file that grows while it is read is refused too.
    """
    path = Path(path)
    try:
        problem = _not_a_regular_file(path, os.stat(path).st_mode)
        if problem is not None:
            raise ImageError(problem)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        file = io.FileIO(os.open(path, flags | getattr(os, "O_BINARY", 0)), "rb")
    except ImageError:
        raise
    except OSError as exc:
        raise _os_error(path, exc) from exc
    except ValueError as exc:  # a NUL byte in the path
        raise ImageError(f"{str(path)!r}: not a usable file path ({exc})") from exc
    try:
        opened = os.fstat(file.fileno())  # what was opened, which may not be what was looked at
        problem = _not_a_regular_file(path, opened.st_mode)
        if problem is None and opened.st_size > max_bytes:
            problem = _too_large(path, opened.st_size, max_bytes)
    except OSError as exc:
        file.close()
        raise _os_error(path, exc) from exc
    if problem is not None:
        file.close()
        raise ImageError(problem)
    return file, opened.st_size


def _os_error(path: Path, exc: OSError) -> ImageError:
    """The ``ImageError`` for an ``OSError`` met opening or reading ``path``."""
    if isinstance(exc, FileNotFoundError):
        return ImageError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return ImageError(f"{path}: is a directory, not an image file")
    if isinstance(exc, PermissionError):
        return ImageError(f"{path}: cannot be read (permission denied)")
    return ImageError(f"{path}: cannot be read ({exc.strerror or exc})")


def read_image_file(path: str | Path, *, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of an image file: only a regular file of at most ``max_bytes`` bytes is read (see
    :func:`open_image_file`), at most ``max_bytes + 1`` bytes of it; anything else, and an empty file or one that
    grows past ``max_bytes`` while it is read, is an ``ImageError`` naming the path and the problem. A remote URL
    is an ``ImageError`` too (guardrail never fetches images)."""
    if isinstance(path, str) and (scheme := _URL.match(path)) is not None and scheme.group(1).lower() != "file":
        raise _remote(path, "image")  # Path() would turn "http://a/b" into "http:/a/b"
    path = Path(path)
    file, size = open_image_file(path, max_bytes=max_bytes)
    with file:
        try:
            data = _read_at_most(file, size, max_bytes)
        except OSError as exc:
            raise _os_error(path, exc) from exc
    if data is None:
        raise ImageError(_too_large(path, 0, max_bytes, grew=True))
    if not data:
        raise ImageError(f"{path}: empty (0 bytes)")
    return data


def _read_at_most(file: io.FileIO, size: int, max_bytes: int) -> bytes | None:
    """The file's bytes (``size`` expected, ``size <= max_bytes``), or ``None`` once more than ``max_bytes`` were
    read: a file that grew since it was measured (or that reports no size, like the files of ``/proc``) is read on in
    bounded chunks, never past ``max_bytes + 1`` bytes."""
    parts: list[bytes] = []
    total = 0
    while total <= max_bytes:
        # Up to the expected size and one byte more (one buffer of the file's size: EOF comes before the extra
        # byte), then, if there was more, 1 MiB at a time.
        want = size + 1 - total if total <= size else min(1 << 20, max_bytes + 1 - total)
        chunk = file.read(want)
        if chunk is None:  # it would block: a regular file never does
            raise OSError(f"reading would block after {total} bytes")
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        return None
    return parts[0] if len(parts) == 1 else b"".join(parts)
