"""A tiny OpenAI-compatible HTTP server on 127.0.0.1 for fault and protocol tests (no model behind it).

``FakeServer(mode)`` answers ``POST /v1/chat/completions`` according to ``mode``:

- ``"ok"``: a structured answer with OpenAI-style log-prob records (4-character tokens); the answer is
  ``black`` when more than half of the image's pixels are black, else ``red``. A request carrying vLLM's
  ``prompt_logprobs`` extension gets ``prompt_logprobs`` for its prompt: a few template tokens, then the final
  assistant message in 4-character tokens, with log-prob -0.1 under a normal image and -2.0 under a mostly
  black one (so the perturbation KL is positive);
- ``"no_scoring"``: like ``"ok"``, but refuses ``prompt_logprobs`` with HTTP 422, as ``transformers serve`` does;
- ``"ignore_scoring"``: like ``"ok"``, but answers a ``prompt_logprobs`` request without them;
- ``"429"`` / ``"500"``: that HTTP status with an OpenAI-style error body;
- ``"malformed"``: HTTP 200 whose JSON body is cut in the middle; ``"no_choices"``: valid JSON, no choices;
- ``"truncated"``: a ``Content-Length`` promising more bytes than are sent before the connection closes;
- ``"slow"``: the ``"ok"`` answer after ``delay`` seconds.

``requests`` counts the chat requests received (to check that retries stay within the budget); ``bodies`` and
``headers`` keep each one's JSON body and HTTP headers, names in lower case (e.g. the ``authorization`` sent).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

TEXT = (
    "<think><vision>a red circle</vision><reasoning>the circle is red</reasoning></think> \\boxed{ANSWER} "
    "<confidence><vision_confidence>8</vision_confidence><reasoning_confidence>7</reasoning_confidence></confidence>"
)


def _chunks(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _mostly_black(body: dict[str, Any]) -> bool:
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                data = part["image_url"]["url"].split(",", 1)[1]
                pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
                if (pixels.max(axis=-1) == 0).mean() > 0.5:
                    return True
    return False


def closed_port() -> int:
    """A local port with nothing listening (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) resets the connection: expected, not worth a traceback."""


class FakeServer:
    """Run with ``with FakeServer("ok") as server: ... server.base_url ...``."""

    def __init__(self, mode: str = "ok", *, delay: float = 2.0) -> None:
        self.mode, self.delay = mode, delay
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests += 1
                fake.bodies.append(body)
                fake.headers.append({name.lower(): value for name, value in self.headers.items()})
                fake.answer(self, body)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        mode = self.mode
        if mode in ("429", "500"):
            error = {"error": {"message": f"fake {mode}", "type": "server_error", "code": mode}}
            return self._send(handler, int(mode), json.dumps(error).encode())
        if mode == "malformed":
            return self._send(handler, 200, b'{"id": "x", "choices": [{"index": 0, "mess')
        if mode == "no_choices":
            return self._send(handler, 200, json.dumps({"id": "x", "object": "chat.completion"}).encode())
        if mode == "truncated":
            payload = json.dumps(self._completion(body)).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload) + 100))
            handler.end_headers()
            handler.wfile.write(payload[: len(payload) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return None
        if mode == "slow":
            time.sleep(self.delay)
        if "prompt_logprobs" in body:
            if mode == "no_scoring":
                detail = {"detail": "Unexpected fields in the request: {'prompt_logprobs'}"}
                return self._send(handler, 422, json.dumps(detail).encode())
            if mode != "ignore_scoring":
                return self._send(handler, 200, json.dumps(self._scored(body)).encode())
        return self._send(handler, 200, json.dumps(self._completion(body)).encode())

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    @staticmethod
    def _completion(body: dict[str, Any]) -> dict[str, Any]:
        text = TEXT.replace("ANSWER", "black" if _mostly_black(body) else "red")
        finish_reason = "stop"
        for stop in body.get("stop") or ():  # as a server does: the text ends before the first stop sequence
            text = text.split(stop, 1)[0]
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and len(_chunks(text)) > limit:
            text, finish_reason = "".join(_chunks(text)[:limit]), "length"
        logprobs = None
        if body.get("logprobs"):
            top = body.get("top_logprobs") or 0
            logprobs = {
                "content": [
                    {"token": t, "logprob": -0.1, "bytes": list(t.encode()),
                     "top_logprobs": [{"token": t, "logprob": -0.1, "bytes": None}][:top]}
                    for t in _chunks(text)
                ]
            }  # fmt: skip
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "logprobs": logprobs,
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": len(_chunks(text)), "total_tokens": 12},
        }

    @classmethod
    def _scored(cls, body: dict[str, Any]) -> dict[str, Any]:
        answer = body["messages"][-1]["content"]
        logprob = -2.0 if _mostly_black(body) else -0.1
        prompt = ["USER", ": ", "<image>", "\nASSISTANT:", *_chunks(answer)]
        entries: list[Any] = [None]
        entries += [{str(i): {"logprob": -1.0, "rank": 1, "decoded_token": t}} for i, t in enumerate(prompt[1:4])]
        entries += [{str(100 + i): {"logprob": logprob, "rank": 1, "decoded_token": t}}
                    for i, t in enumerate(prompt[4:])]  # fmt: skip
        completion = cls._completion({"messages": [], "model": body.get("model")})
        completion["prompt_logprobs"] = entries
        return completion
