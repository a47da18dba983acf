"""The review page: a small local web application where a person reviews pending escalations, image included.

``guardrail escalations serve --db FILE|URL`` runs it (:func:`serve_review`). It lists the escalations pending in a
checkpoint database, a SQLite file or PostgreSQL (:func:`~guardrail.integrations.escalations.list_escalations`),
and shows each one with
its images, question, the model's perception and reasoning, the candidate answer, the confidences as bars, the
rule that escalated and why. The reviewer approves, edits, answers or rejects; the thread then resumes through
:func:`~guardrail.integrations.escalations.resolve_escalation`, exactly as ``guardrail escalations resolve`` does.

Security, for a page that shows private images and resumes agents:

- it binds 127.0.0.1 unless told otherwise, and answers only to the host names it was bound for (no DNS
  rebinding): bound to a loopback address, ``127.0.0.1``, ``localhost`` and ``[::1]``; to another address, that
  address; to every interface (``0.0.0.0``, ``::``), this machine's own names and addresses (those three, its host
  name and fully qualified name, and the addresses of its network interfaces: :func:`machine_host_names`). Other
  names it is reached by (a DNS name, a proxy's) are added with ``allowed_hosts`` (``serve --allow-host``);
- every request needs the access token (random per start, printed in the URL as Jupyter does): a request carrying
  ``?token=`` gets an ``HttpOnly``, ``SameSite=Strict`` cookie and is redirected to the same page without the
  token in its address; scripts may send ``Authorization: token …``. Anything else is 401;
- state changes are POSTs that carry a CSRF token (derived from the access token) and, when the browser says
  where they come from (``Origin``, ``Sec-Fetch-Site``), come from this page;
- an image is served only by the SHA-256 recorded in a *pending* escalation, read from the path, ``file://`` or
  ``data:`` URL recorded there (by :mod:`guardrail.image_refs`), or else from the image store named at start
  (``images``: by default the folder beside a SQLite database) at the place that hash names (never from a path in
  the request), only if its bytes still have that hash, and only as a raster image (PNG, JPEG, GIF, WebP, BMP).
  The store serves escalations whose recorded path is not readable here: agents on other machines writing to a
  shared folder mounted elsewhere on this one;
- every response forbids scripts, framing and foreign images (``Content-Security-Policy``), sends no referrer to
  other sites (the token never stays in an address anyway), and nothing is cached but the content-addressed
  images; model text is HTML-escaped by the templates.

A checkpoint database that cannot be read or written (locked by another process, read-only) is a 503 page saying
why, with nothing changed (JSON ``{"error": ...}`` to a client that asks for JSON), never a bare 500.

Needs the ``review`` extra: ``pip install 'lvlm-guardrail[review]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import ipaddress
import secrets
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from ..errors import InputError
from ..image_refs import image_bytes, is_data_url, local_path
from ..types import COMPONENTS
from ._database import is_postgres_url
from ._review import ReviewError, format_confidence, parse_review
from .escalations import (
    DEFAULT_GRAPH,
    GraphFactory,
    PendingEscalation,
    list_escalations,
    load_graph_factory,
    open_saver,
    resolve_escalation,
)
from .escalations import REVIEW_INSTALL_HINT as INSTALL_HINT
from .image_store import ImageStore, is_sha256

try:
    import jinja2
    import python_multipart  # noqa: F401 (Starlette parses forms with it)
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import MutableHeaders
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route
    from starlette.templating import Jinja2Templates
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - tested with the modules hidden
    raise ImportError(f"{INSTALL_HINT} ({exc})") from exc

__all__ = ["INSTALL_HINT", "ReviewServer", "create_review_app", "machine_host_names", "serve_review"]

_PAGE = Path(__file__).with_name("review_page")
_MAX_IMAGE_BYTES = 64 * 1024 * 1024
_RASTER = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_DECISIONS = ("approve", "edit", "answer", "reject")


@dataclass
class _Review:
    """What the application's endpoints share."""

    db: str | Path
    graph: GraphFactory
    token: str
    templates: Jinja2Templates
    images: ImageStore | None = None
    csrf: str = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.csrf = hmac.new(self.token.encode(), b"guardrail-review-csrf", hashlib.sha256).hexdigest()

    def pending(self) -> list[PendingEscalation]:
        with open_saver(self.db, read_only=True) as saver:
            return list_escalations(saver)

    def find(self, interrupt_id: str) -> PendingEscalation | None:
        return next((p for p in self.pending() if p.interrupt_id == interrupt_id), None)

    def resolve(self, interrupt_id: str, decision: dict[str, Any]) -> PendingEscalation:
        """Resume the escalation's thread with ``decision`` (as ``guardrail escalations resolve`` does).
        ``LookupError`` when it is no longer pending, ``ReviewError`` when the decision does not fit it."""
        with self.lock:  # one resume at a time: two reviewers cannot both answer one escalation
            escalation = self.find(interrupt_id)
            if escalation is None:
                raise LookupError("this escalation is no longer pending (it was resolved, perhaps elsewhere)")
            parse_review(decision, candidate_answer=escalation.candidate_answer)
            with open_saver(self.db) as saver:
                resolve_escalation(saver, escalation.thread_id, decision, graph=self.graph)
        return escalation


def create_review_app(
    db: str | Path,
    *,
    token: str,
    graph: str | GraphFactory = DEFAULT_GRAPH,
    host_names: tuple[str, ...] | None = ("127.0.0.1", "localhost"),
    images: ImageStore | str | Path | None = None,
) -> Starlette:
    """The review application over the checkpoint database ``db``, a SQLite file or a ``postgresql://`` URL (see
    the module docstring).

    ``token`` is the access token (at least 16 characters); ``graph`` the graph factory that resumes threads
    (checked here); ``host_names`` the names the ``Host`` header may carry (``None``: any, which only an
    application behind a proxy that checks them should do; :class:`ReviewServer` always passes its names);
    ``images`` the image store to look in when an image's recorded path cannot be read here (default: the folder
    beside a SQLite database; none for PostgreSQL). ``InputError`` when ``db`` is not a
    checkpoint database or cannot be reached, ``ConfigurationError`` for a bad graph factory or a missing
    ``postgres`` extra.
    """
    if len(token) < 16:
        raise ValueError(f"`token` must have at least 16 characters, got {len(token)}")
    database: str | Path = db if is_postgres_url(db) else Path(db)
    with open_saver(database, read_only=True):  # a missing or foreign database is refused now, not on first use
        pass
    if images is None:
        store = ImageStore.beside(database) if isinstance(database, Path) else None
    else:
        store = ImageStore(images) if isinstance(images, str | Path) else images
        if not store.root.is_dir():
            raise InputError(f"image store {str(store.root)!r} is not a folder")
    factory = load_graph_factory(graph) if isinstance(graph, str) else graph
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_PAGE), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters["confidence"] = format_confidence
    environment.filters["quote"] = lambda value: quote(str(value), safe="")
    review = _Review(db=database, graph=factory, token=token, templates=Jinja2Templates(env=environment), images=store)
    routes = [
        Route("/", _endpoint(review, _index), methods=["GET"]),
        Route("/escalations/{interrupt_id}", _endpoint(review, _escalation), methods=["GET"]),
        Route("/escalations/{interrupt_id}", _endpoint(review, _decide), methods=["POST"]),
        Route("/images/{sha256}", _endpoint(review, _image), methods=["GET"]),
        Route("/review.css", _endpoint(review, _stylesheet), methods=["GET"]),
        Route("/favicon.ico", _endpoint(review, _no_icon), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Gate, token=token, host_names=host_names)
    return app


# -- endpoints -----------------------------------------------------------------------------------------------------


def _endpoint(review: _Review, handler: Callable[[_Review, Request], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await handler(review, request)
        except InputError as exc:  # open_saver's words for a database that cannot be used now: locked, read-only
            return _unavailable(review, request, str(exc))
        return response

    return endpoint


def _unavailable(review: _Review, request: Request, reason: str) -> Response:
    """503 with the reason: a page for a browser, JSON for a client that asks for it, text for an image."""
    status = 503
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return JSONResponse({"error": reason, "status": status}, status_code=status)
    if request.url.path.startswith("/images/"):
        return PlainTextResponse(f"503 Service Unavailable: {reason}", status)
    context = {"reason": reason, "writing": request.method == "POST"}
    return _render(review, request, "unavailable.html", context, status_code=status)


async def _index(review: _Review, request: Request) -> Response:
    pending = await run_in_threadpool(review.pending)
    resolved = request.query_params.get("resolved")
    notice = None
    if resolved is not None:
        decision = request.query_params.get("decision", "")
        notice = f"Thread {resolved}: {decision if decision in _DECISIONS else 'decided'}; the agent has resumed."
    views = [_view(p, review.images) for p in pending]
    return _render(review, request, "index.html", {"pending": views, "notice": notice})


async def _escalation(review: _Review, request: Request) -> Response:
    escalation = await run_in_threadpool(review.find, request.path_params["interrupt_id"])
    if escalation is None:
        return _render(review, request, "gone.html", {}, status_code=404)
    return _render(review, request, "escalation.html", {"e": _view(escalation, review.images), "error": None})


async def _decide(review: _Review, request: Request) -> Response:
    form = await request.form()
    if not hmac.compare_digest(str(form.get("csrf", "")), review.csrf) or not _same_origin(request):
        return PlainTextResponse("403 Forbidden: the form is not from this review page (CSRF check)", 403)
    interrupt_id = request.path_params["interrupt_id"]
    kind = str(form.get("decision", ""))
    decision: dict[str, Any] = {"type": kind}
    if kind in ("edit", "answer"):
        decision["answer"] = str(form.get("answer", "")).strip()
    elif kind == "reject" and str(form.get("reason", "")).strip():
        decision["reason"] = str(form.get("reason", "")).strip()
    try:
        escalation = await run_in_threadpool(review.resolve, interrupt_id, decision)
    except LookupError:
        return _render(review, request, "gone.html", {}, status_code=409)
    except ReviewError as exc:
        current = await run_in_threadpool(review.find, interrupt_id)
        if current is None:
            return _render(review, request, "gone.html", {}, status_code=409)
        context = {"e": _view(current, review.images), "error": str(exc)}
        return _render(review, request, "escalation.html", context, status_code=400)
    target = f"/?resolved={quote(escalation.thread_id, safe='')}&decision={kind}"
    return RedirectResponse(target, status_code=303)  # after a POST, the browser GETs the list


async def _image(review: _Review, request: Request) -> Response:
    sha = request.path_params["sha256"]
    if not is_sha256(sha):
        return PlainTextResponse("404 Not Found", 404)
    pending = await run_in_threadpool(review.pending)
    recorded = [i for p in pending for i in p.images if i.get("sha256") == sha]
    if not recorded or not (review.images is not None or any(i.get("ref") for i in recorded)):
        return PlainTextResponse("404 Not Found: no pending escalation has this image", 404)
    data = await run_in_threadpool(_find_image, sha, recorded, review.images)
    if data is None:
        return PlainTextResponse("410 Gone: the image is missing or changed since the escalation", 410)
    media_type = _raster_type(data)
    if media_type is None:
        return PlainTextResponse("415 Unsupported Media Type: not a PNG, JPEG, GIF, WebP or BMP image", 415)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600, immutable"})


async def _stylesheet(review: _Review, request: Request) -> Response:
    return FileResponse(_PAGE / "review.css", media_type="text/css")


async def _no_icon(review: _Review, request: Request) -> Response:
    return Response(status_code=204)


def _render(
    review: _Review, request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    context = {**context, "csrf": review.csrf, "components": COMPONENTS}
    return review.templates.TemplateResponse(request, name, context, status_code=status_code)


def _view(escalation: PendingEscalation, store: ImageStore | None) -> dict[str, Any]:
    """What the templates show of one escalation (``store``: where images are also looked for by hash)."""
    images: list[dict[str, Any]] = []
    for number, image in enumerate(escalation.images, start=1):
        ref, sha = image.get("ref"), image.get("sha256")
        readable = bool(ref) and (is_data_url(str(ref)) or local_path(str(ref)) is not None)
        servable = is_sha256(sha) and (readable or _in_store(store, str(sha), _text(image.get("mime_type"))))
        images.append(
            {
                "number": number,
                "src": f"/images/{sha}" if servable else None,
                "ref": None if ref is None or is_data_url(str(ref)) else str(ref),
                "source": image.get("source", "request"),
                "note": image.get("note"),
            }
        )
    decided = escalation.decision_confidence  # what the escalating rule acted on; absent from older payloads
    confidence = [
        {
            "name": name,
            "value": escalation.confidence.get(name),
            "cause": name in escalation.components,
            "decided": escalation.confidence.get(name) if decided is None else decided.get(name),
        }
        for name in COMPONENTS
    ]
    error = escalation.payload.get("error")
    return {
        "id": escalation.interrupt_id,
        "thread_id": escalation.thread_id,
        "question": escalation.question,
        "candidate": escalation.candidate_answer,
        "confidence": confidence,
        "overall": escalation.confidence.get("overall"),
        "reason": escalation.reason,
        "rule": escalation.rule,
        "components": escalation.components,
        "policy": escalation.payload.get("policy"),
        "error": error if isinstance(error, Mapping) else None,
        "perception": escalation.perception,
        "reasoning": escalation.reasoning,
        "response": escalation.response,
        "images": images,
        "thumb": next((i["src"] for i in images if i["src"]), None),
        "allowed": [d for d in _DECISIONS if escalation.candidate_answer or d in ("answer", "reject")],
    }


def _find_image(sha: str, recorded: list[Mapping[str, Any]], store: ImageStore | None) -> bytes | None:
    """The bytes with hash ``sha``: from a reference recorded in a pending escalation, else from ``store`` where
    that hash is kept; ``None`` when none of them still holds those bytes."""
    places = [str(i["ref"]) for i in recorded if i.get("ref")]
    if store is not None:
        places += [str(store.path_for(sha, m)) for m in dict.fromkeys(_text(i.get("mime_type")) for i in recorded)]
    for place in places:
        data = _read_image(place)
        if data is not None and hashlib.sha256(data).hexdigest() == sha:
            return data
    return None


def _in_store(store: ImageStore | None, sha: str, mime_type: str | None) -> bool:
    try:
        return store is not None and store.path_for(sha, mime_type).is_file()
    except OSError:
        return False


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _read_image(ref: str) -> bytes | None:
    """The bytes a recorded reference names (a ``data:`` URL or a local file), or ``None``: a file is read only if
    it is a regular one, non-blocking and bounded (a device, a pipe or a growing file is refused), and a remote
    URL is never fetched (:mod:`guardrail.image_refs`)."""
    try:
        return image_bytes(ref, max_bytes=_MAX_IMAGE_BYTES)
    except InputError:  # ImageError: missing, unreadable, empty, too large, not a regular file, remote, malformed
        return None


def _raster_type(data: bytes) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a huge image is the browser's to decode, not ours
            with Image.open(io.BytesIO(data)) as image:
                return _RASTER.get(str(image.format))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


# -- the gate: host, token, headers -------------------------------------------------------------------------------


class _Gate:
    """ASGI middleware: allowed ``Host`` names, the access token, and the security headers on every response."""

    def __init__(self, app: ASGIApp, *, token: str, host_names: tuple[str, ...] | None) -> None:
        self.app = app
        self.token = token
        self.host_names = None if host_names is None else {h.lower() for h in host_names}
        self.cookie = "guardrail-review-" + hashlib.sha256(token.encode()).hexdigest()[:12]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        request = Request(scope)
        response = self._refusal(request)
        if response is None and self._given(request.query_params.get("token")):
            # Trade the token in the address for a cookie, and show the page without it.
            query = request.url.remove_query_params("token").query
            response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        host = _host_name(request.headers.get("host", ""))
        if self.host_names is not None and host not in self.host_names:
            return PlainTextResponse("400 Bad Request: unexpected Host header", 400)
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if (
            self._given(request.query_params.get("token"))
            or self._given(request.cookies.get(self.cookie))
            or (scheme.lower() == "token" and self._given(credentials.strip()))
        ):
            return None
        return PlainTextResponse(
            "401 Unauthorized: open the address with ?token=... that `guardrail escalations serve` printed",
            401,
            headers={"WWW-Authenticate": "Token"},
        )

    def _given(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())


def _host_name(header: str) -> str:
    """``127.0.0.1`` of ``127.0.0.1:8765``, ``[::1]`` of ``[::1]:8765``, lower case."""
    name, colon, port = header.rpartition(":")
    if not colon or not port.isdigit() or (name.startswith("[") is not name.endswith("]")):
        name = header
    return name.lower()


# -- serving -------------------------------------------------------------------------------------------------------


class ReviewServer:
    """The review application bound to a socket: :attr:`url` (with the token) is known before :meth:`serve`.

    ``host`` defaults to 127.0.0.1 (this machine only); ``port`` 0 picks a free one. ``OSError`` when the address
    cannot be bound.
    """

    def __init__(
        self,
        db: str | Path,
        *,
        graph: str | GraphFactory = DEFAULT_GRAPH,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        images: ImageStore | str | Path | None = None,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.host = host
        self.host_names: tuple[str, ...] = _host_names(host, allowed_hosts)
        """The ``Host`` names it answers to (see the module docstring); any other is a 400."""
        self.app = create_review_app(db, token=self.token, graph=graph, host_names=self.host_names, images=images)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.port: int = self.socket.getsockname()[1]

    @property
    def exposed(self) -> bool:
        """True when the server listens beyond this machine (not on a loopback address)."""
        return not _is_loopback(self.host)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/?token=…``: the address to open."""
        wildcard = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}
        shown = wildcard.get(self.host) or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"http://{shown}:{self.port}/?token={self.token}"

    def serve(self) -> None:
        """Serve until SIGINT or SIGTERM (uvicorn then shuts down gracefully and re-raises the signal)."""
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        try:
            uvicorn.Server(config).run(sockets=[self.socket])
        finally:
            self.socket.close()


def serve_review(
    db: str | Path,
    *,
    graph: str | GraphFactory = DEFAULT_GRAPH,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[ReviewServer], None] | None = None,
    images: ImageStore | str | Path | None = None,
    allowed_hosts: tuple[str, ...] = (),
) -> None:
    """Serve the review page for ``db`` until interrupted; ``on_ready`` is called with the bound server (its
    :attr:`~ReviewServer.url`) before the first request is answered."""
    server = ReviewServer(db, graph=graph, host=host, port=port, images=images, allowed_hosts=allowed_hosts)
    if on_ready is not None:
        on_ready(server)
    server.serve()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _host_names(host: str, allowed: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The ``Host`` names a server bound to ``host`` answers to, with the ``allowed`` ones (module docstring)."""
    if host in ("0.0.0.0", "::", ""):
        names = machine_host_names()
    elif _is_loopback(host):
        names = _LOOPBACK_NAMES
    else:
        names = (_as_host_header(host),)
    extra = tuple(_as_host_header(name.strip()) for name in allowed if name.strip())
    return tuple(dict.fromkeys(name.lower() for name in (*names, *extra)))


def _as_host_header(name: str) -> str:
    """A name or address as a ``Host`` header carries it, without the port: an IPv6 address in brackets."""
    bare = name.strip("[]")
    try:
        return f"[{bare}]" if ipaddress.ip_address(bare).version == 6 else bare
    except ValueError:
        return name


def machine_host_names() -> tuple[str, ...]:
    """This machine's own names and addresses, as ``Host`` headers carry them: ``127.0.0.1``, ``localhost``,
    ``[::1]``, its host name and fully qualified name, the addresses they resolve to, and (on Linux) the addresses
    of its network interfaces. What a server bound to every interface answers to."""
    names: list[str] = list(_LOOPBACK_NAMES)
    hostnames = [socket.gethostname(), socket.getfqdn()]
    names += hostnames
    for hostname in hostnames:
        with contextlib.suppress(OSError, UnicodeError):
            names += [str(info[4][0]) for info in socket.getaddrinfo(hostname, None)]
    names += _interface_addresses()
    return tuple(dict.fromkeys(_as_host_header(n).lower() for n in names if n))


def _interface_addresses() -> list[str]:
    """The addresses of this machine's network interfaces, where the system tells them (Linux), else none."""
    if not sys.platform.startswith("linux"):
        return []
    found: list[str] = []
    with contextlib.suppress(OSError):  # IPv6: /proc/net/if_inet6, one address (32 hex digits) per line
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            digits = line.split()[0] if line.split() else ""
            if len(digits) == 32:
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(digits))))
    try:
        import fcntl
        import struct

        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except (ImportError, OSError):
        return found
    with probe:
        for _, interface in socket.if_nameindex():
            with contextlib.suppress(OSError):  # an interface without an IPv4 address
                request = struct.pack("256s", interface[:15].encode())
                answer = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
                found.append(socket.inet_ntoa(answer[20:24]))
    return found
