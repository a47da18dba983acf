"""A backend for any OpenAI-compatible chat server (vLLM, SGLang, TGI, ``transformers serve``), over ``openai``.

``generate`` sends the request's text and images (``image_url`` parts with ``data:`` URLs) to
``/v1/chat/completions``, asks for token log-probs (``logprobs=True, top_logprobs=k``) and keeps what comes back:
the text, the ``\\boxed{}`` answer, the per-token log-probs and token strings (where the server returns them),
token counts.

``score_text`` is **server-side teacher-forced scoring** (METHOD.md section 3 against a remote model): the
answer is sent back as a final assistant message that the server continues (``continue_final_message=True,
add_generation_prompt=False``) with ``prompt_logprobs=0`` and ``max_tokens=1``, once under the original images
and once per perturbed copy. The log-probs of the prompt's last tokens are those of the answer, teacher-forced.
These are vLLM's extensions of the chat API. A server without them (it rejects the fields, or answers without
``prompt_logprobs``) raises :class:`ScoringUnavailable`; the answer is remembered, so later calls fail fast
without another request, and the black-box estimator falls back to answer agreement. The legacy
``/v1/completions`` route with ``echo`` is not used: it carries no images, so it cannot score under perturbed
ones.

``score_generation`` (what the estimator calls) sends **only the perturbed copies**: row 0, the answer under the
original images, is the generation's own token log-probs, which the server computed in the same forward passes
(vLLM returns the model's raw log-probs, ``--logprobs-mode raw_logprobs``, its default). It does so only where
they are the same numbers for the same tokens: a greedy generation (temperature 0; a sampled one's log-probs may
be reshaped by the sampling settings on other servers) by this backend, whose tokens spell the scored text and
are exactly those the server split the text into when scoring it (token for token, none reaching into the chat
template). Otherwise it scores row 0 too (one more request), as ``score_text`` does; ``reference_logprobs=False``
always does. One request per copy is the least the chat API allows: it takes one conversation per request;
vLLM's ``/v1/chat/completions/batch`` takes several but returns no ``prompt_logprobs``, and ``/v1/completions``
takes several prompts but no images.

What ``transformers serve`` (transformers 5.24) provides, checked by ``tests/backends/test_served_model.py``:
chat completions with images for vision-language models, yes; generated-token log-probs, **no** (``logprobs``
and ``top_logprobs`` are accepted and ignored: the response has none); prompt log-probs / teacher-forced scoring,
**no** (``prompt_logprobs`` is refused with HTTP 422); sampled re-asks, **no** for a model whose generation
config does not sample (``temperature`` is then ignored). Against it the guard measures verbalized scores and
answer agreement under perturbed images only, and says so in ``Signals.problems``.

Faults: timeouts become :class:`~guardrail.BackendTimeout`; connection refused, HTTP 429/500 and every other
client error, and a malformed or truncated response, become :class:`~guardrail.BackendError`, the original kept
as ``__cause__``. Retries are off by default (``max_retries=0``): the guard's policy and budget decide whether
to try again.

Needs the ``openai`` extra: ``pip install 'lvlm-guardrail[openai]'``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from PIL import Image

from ..errors import BackendError, is_control_flow
from ..responses import final_answer
from ..types import Generation, GenerationOptions, ImageBlock, Request, Usage, finish_reason_of
from ._remote import openai_messages, parse_logprobs, translate_error
from .base import ScoringUnavailable, TextScores

__all__ = ["OpenAICompatibleBackend", "ScoringUnavailable"]

INSTALL_HINT = "OpenAICompatibleBackend needs the `openai` package: pip install 'lvlm-guardrail[openai]'"
PROVIDER = "openai-compatible"
_REJECTED = (400, 404, 422)
"""HTTP statuses with which a server refuses a request it does not understand (here: the scoring extension)."""


def _tls_context() -> ssl.SSLContext:
    """The CA bundle httpx itself uses (certifi), else the system's."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return openai


class OpenAICompatibleBackend:
    """Generate with (and, where the server offers it, re-score under perturbed images) a served model.

    ``base_url`` ends in ``/v1``; ``model`` is the served model's id. ``timeout`` (seconds) and ``max_retries``
    go to the ``openai`` client. Generation is greedy (``temperature``) unless ``options.temperature`` is given,
    or ``sample_reasks`` is set and the call is a re-ask. ``logprobs``/``top_logprobs`` ask for token log-probs.
    ``scoring="off"`` never attempts server-side scoring. ``max_images`` is the most images the served model takes
    in one prompt (vLLM's ``--limit-mm-per-prompt``; one for a LLaVA-1.5-style model), so that more views replace
    the image instead of being appended and refused by the server; ``None``: not declared.
    ``reference_logprobs``: take row 0 of server scoring from the generation's own log-probs where they are the
    teacher-forced ones (see the module docstring); switch it off for a server whose generation log-probs are not
    the model's raw ones (vLLM with ``--logprobs-mode processed_logprobs``, or penalties in its defaults).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 0,
        name: str | None = None,
        logprobs: bool = True,
        top_logprobs: int = 5,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        sample_reasks: bool = False,
        reask_temperature: float = 0.7,
        scoring: Literal["auto", "off"] = "auto",
        max_images: int | None = None,
        reference_logprobs: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"`timeout` must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"`max_retries` must be an int >= 0, got {max_retries}")
        if not 0 <= top_logprobs <= 20:
            raise ValueError(f"`top_logprobs` must be in 0..20 (the OpenAI API's range), got {top_logprobs}")
        if scoring not in ("auto", "off"):
            raise ValueError(f"`scoring` must be 'auto' or 'off', got {scoring!r}")
        if max_images is not None and not (type(max_images) is int and max_images >= 1):
            raise ValueError(f"`max_images` must be an int >= 1 or None, got {max_images!r}")
        openai = _openai()
        options: dict[str, Any] = {
            "base_url": base_url,
            "api_key": api_key or "EMPTY",
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client = openai.OpenAI(**options)
        self._async_options = options
        self._tls: ssl.SSLContext | None = None
        self.base_url, self.model = base_url, model
        self.logprobs, self.top_logprobs = logprobs, top_logprobs
        self.temperature, self.max_tokens = temperature, max_tokens
        self.sample_reasks, self.reask_temperature = sample_reasks, reask_temperature
        self.scoring_problem: str | None = "scoring switched off (scoring='off')" if scoring == "off" else None
        self._name = name or model
        self.max_images = max_images
        self.reference_logprobs = reference_logprobs

    @property
    def name(self) -> str:
        """The model's name in results and traces (``name``, else the served model id)."""
        return self._name

    def _aclient(self) -> Any:
        """A fresh async client, to be closed with ``async with``.

        One per call, because an httpx async client cannot outlive the event loop it first ran on, and callers
        may run ``asyncio.run`` more than once; the TLS context is made once and shared (creating it is most of
        a client's cost).
        """
        openai = _openai()
        if self._tls is None:
            self._tls = _tls_context()
        return openai.AsyncOpenAI(**self._async_options, http_client=openai.DefaultAsyncHttpxClient(verify=self._tls))

    def close(self) -> None:
        """Close the HTTP connections of the (sync) client; async calls close their own."""
        self._client.close()

    async def aclose(self) -> None:
        """The async twin of :meth:`close`."""
        self._client.close()

    # -- generation --------------------------------------------------------------------------------------------

    def _body(self, request: Request, options: GenerationOptions) -> dict[str, Any]:
        temperature = options.temperature
        if temperature is None:
            sampled = self.sample_reasks and options.attempt > 0
            temperature = self.reask_temperature if sampled else self.temperature
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(request),
            "temperature": temperature,
            "seed": options.seed if options.seed is not None else options.attempt,
        }
        max_tokens = options.max_new_tokens or self.max_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if options.stop:
            body["stop"] = list(options.stop)
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        if options.assistant_prefix is not None:
            # vLLM continues the final assistant message; its prompt log-probs give the prefix tokens' own.
            body["messages"] = [*body["messages"], {"role": "assistant", "content": options.assistant_prefix}]
            body["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False, "prompt_logprobs": 0}
        return body

    def _generation(
        self, completion: Any, seconds: float, body: Mapping[str, Any], options: GenerationOptions
    ) -> Generation:
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise BackendError(f"{self.name}: malformed response: no choices ({type(completion).__name__})")
        choice = choices[0]
        text = getattr(getattr(choice, "message", None), "content", None)
        if not isinstance(text, str):
            raise BackendError(f"{self.name}: malformed response: the first choice has no text content")
        tokens, logprobs = parse_logprobs(getattr(choice, "logprobs", None), text=text)
        if options.assistant_prefix is not None:
            text, tokens, logprobs = self._continued(completion, options.assistant_prefix, text, tokens, logprobs)
        usage = getattr(completion, "usage", None)
        return Generation(
            text=text,
            answer=final_answer(text),
            model=self.name,
            provider=PROVIDER,
            token_logprobs=logprobs,
            tokens=tokens if len(tokens) == len(logprobs) else (),
            usage=Usage(
                input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            seconds=seconds,
            finish_reason=finish_reason_of(getattr(choice, "finish_reason", None)),
            options=GenerationOptions(
                attempt=options.attempt,
                seed=body["seed"],
                temperature=body["temperature"],
                max_new_tokens=body.get("max_tokens"),
                stop=tuple(body.get("stop", ())),
                assistant_prefix=options.assistant_prefix,
            ),
        )

    def _continued(
        self, completion: Any, prefix: str, text: str, tokens: tuple[str, ...], logprobs: tuple[float, ...]
    ) -> tuple[str, tuple[str, ...], tuple[float, ...]]:
        """The whole answer of a generation continued from ``prefix``: its text, tokens and log-probs, the prefix's
        first (its tokens and log-probs are the tail of the prompt's ``prompt_logprobs``).

        A server that did not continue the final assistant message (no ``prompt_logprobs``, or a prompt that does
        not end with the prefix: it opened a new turn) is refused with ``BackendError``: its text would be a fresh
        answer, not the continuation asked for."""
        extra = getattr(completion, "model_extra", None) or {}
        entries = extra.get("prompt_logprobs") if isinstance(extra, Mapping) else None
        if not isinstance(entries, list):
            raise BackendError(
                f"{self.name}: cannot continue from an assistant prefix: the server answered without "
                "prompt_logprobs, so it does not honour vLLM's continue_final_message extension"
            )
        try:
            head = _answer_tail(entries, prefix, self.name)
        except ScoringUnavailable as exc:
            raise BackendError(
                f"{self.name}: cannot continue from an assistant prefix: the prompt the server completed does not end "
                "with it (it did not continue the final assistant message)"
            ) from exc
        if head.cut:  # as the transformers backend: a prefix the template's tokens reach into is not the answer's
            raise BackendError(
                f"{self.name}: cannot continue from an assistant prefix whose first token joins the chat template's "
                "last one: its tokens would not be the answer's"
            )
        if not logprobs:  # no log-probs for the continuation: the answer has none at all
            return prefix + text, (), ()
        return prefix + text, head.tokens + tokens, head.logprobs + logprobs

    def generate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """Answer ``request`` (see the class docstring); library errors become ``BackendError``."""
        options = options or GenerationOptions()
        body = self._body(request, options)
        start = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(**body)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            raise translate_error(exc, f"{self.name}: chat completion") from exc
        return self._generation(completion, time.perf_counter() - start, body, options)

    async def agenerate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """The async twin of :meth:`generate` (``openai.AsyncOpenAI``)."""
        options = options or GenerationOptions()
        body = self._body(request, options)
        start = time.perf_counter()
        try:
            async with self._aclient() as client:
                completion = await client.chat.completions.create(**body)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            raise translate_error(exc, f"{self.name}: chat completion") from exc
        return self._generation(completion, time.perf_counter() - start, body, options)

    # -- server-side teacher-forced scoring --------------------------------------------------------------------

    @property
    def scoring_available(self) -> bool | None:
        """``False`` once the server has shown it cannot score (``scoring_problem`` says why), else unknown."""
        return False if self.scoring_problem is not None else None

    def _score_bodies(
        self, request: Request, text: str, variants: Sequence[Sequence[Image.Image]], *, original: bool = True
    ) -> list[dict[str, Any]]:
        """One scoring request per row: the original images first (unless ``original`` is false), then each
        variant."""
        if self.scoring_problem is not None:
            raise ScoringUnavailable(f"{self.name}: {self.scoring_problem}")
        if not text:
            raise BackendError(f"{self.name}: cannot score an empty answer")
        rows = [request] if original else []
        for i, variant in enumerate(variants):
            if len(variant) != len(request.images):
                raise BackendError(f"variant {i} has {len(variant)} images, the request has {len(request.images)}")
            rows.append(request.swapping_images([ImageBlock.from_pil(im) for im in variant]))
        return [
            {
                "model": self.model,
                "messages": [*openai_messages(row), {"role": "assistant", "content": text}],
                "max_tokens": 1,
                "temperature": 0.0,
                "extra_body": {"prompt_logprobs": 0, "add_generation_prompt": False, "continue_final_message": True},
            }
            for row in rows
        ]

    def _scoring_error(self, exc: Exception) -> BackendError:
        status = getattr(exc, "status_code", None)
        if status in _REJECTED:
            body = getattr(exc, "body", None)
            reason = f"{exc}: {body}" if body else str(exc)
            self.scoring_problem = f"the server rejected the prompt_logprobs request (HTTP {status}: {reason})"
            return ScoringUnavailable(f"{self.name}: {self.scoring_problem}")
        return translate_error(exc, f"{self.name}: teacher-forced scoring")

    def _row(self, completion: Any, text: str) -> _Row:
        extra = getattr(completion, "model_extra", None) or {}
        entries = extra.get("prompt_logprobs") if isinstance(extra, Mapping) else None
        if not isinstance(entries, list):
            self.scoring_problem = "the server answered without prompt_logprobs (it ignores the vLLM extension)"
            raise ScoringUnavailable(f"{self.name}: {self.scoring_problem}")
        return _answer_tail(entries, text, self.name)

    def _score_one(self, body: dict[str, Any], text: str) -> _Row:
        try:
            completion = self._client.chat.completions.create(**body)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            raise self._scoring_error(exc) from exc
        return self._row(completion, text)

    async def _ascore_one(self, client: Any, body: dict[str, Any], text: str) -> _Row:
        try:
            completion = await client.chat.completions.create(**body)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            raise self._scoring_error(exc) from exc
        return self._row(completion, text)

    def _scores(self, text: str, rows: Sequence[_Row]) -> TextScores:
        tokens = rows[0].tokens
        for i, row in enumerate(rows[1:], start=1):
            if row.tokens != tokens:
                raise BackendError(f"{self.name}: row {i} tokenises the answer differently from the original")
        return TextScores(text=text, tokens=tokens, token_logprobs=tuple(row.logprobs for row in rows))

    def score_text(self, request: Request, text: str, variants: Sequence[Sequence[Image.Image]] = ()) -> TextScores:
        """Teacher-forced log-probs of ``text`` under the request's images (row 0) and each variant (rows 1..).

        Raises :class:`ScoringUnavailable` when the server cannot score (see the module docstring).
        """
        return self._scores(text, [self._score_one(b, text) for b in self._score_bodies(request, text, variants)])

    async def ascore_text(
        self, request: Request, text: str, variants: Sequence[Sequence[Image.Image]] = ()
    ) -> TextScores:
        """The async twin of :meth:`score_text` (the rows are requested concurrently)."""
        bodies = self._score_bodies(request, text, variants)
        async with self._aclient() as client:
            rows = await asyncio.gather(*(self._ascore_one(client, b, text) for b in bodies))
        return self._scores(text, rows)

    # -- row 0 from the generation -----------------------------------------------------------------------------

    def _reference_row(self, generation: Generation, text: str) -> _Row | None:
        """The generation's own log-probs as row 0, ``None`` where they may not be what scoring would give: not
        this backend's answer, sampled, without token strings, or tokens that do not spell ``text``."""
        if not self.reference_logprobs or generation.provider != PROVIDER or generation.model != self.name:
            return None
        options = generation.options
        if options is None or options.temperature != 0:
            return None
        tokens, logprobs = generation.tokens, generation.token_logprobs
        if not tokens or len(tokens) != len(logprobs) or "".join(tokens) != text:
            return None
        return _Row(tuple(tokens), tuple(logprobs))

    def score_generation(
        self, request: Request, generation: Generation, text: str, variants: Sequence[Sequence[Image.Image]] = ()
    ) -> TextScores:
        """What :meth:`score_text` returns for ``text`` (``generation``'s answer), with one request per variant
        only: row 0 is the generation's log-probs where they are the same numbers for the same tokens (see the
        module docstring), else it is scored too."""
        reference = self._reference_row(generation, text)
        if reference is None:
            return self.score_text(request, text, variants)
        rows = [self._score_one(b, text) for b in self._score_bodies(request, text, variants, original=False)]
        if not _aligned(reference, rows):
            (body,) = self._score_bodies(request, text, ())
            reference = self._score_one(body, text)
        return self._scores(text, [reference, *rows])

    async def ascore_generation(
        self, request: Request, generation: Generation, text: str, variants: Sequence[Sequence[Image.Image]] = ()
    ) -> TextScores:
        """The async twin of :meth:`score_generation` (the variants are requested concurrently)."""
        reference = self._reference_row(generation, text)
        if reference is None:
            return await self.ascore_text(request, text, variants)
        bodies = self._score_bodies(request, text, variants, original=False)
        async with self._aclient() as client:
            rows = await asyncio.gather(*(self._ascore_one(client, b, text) for b in bodies))
            if not _aligned(reference, rows):
                (body,) = self._score_bodies(request, text, ())
                reference = await self._ascore_one(client, body, text)
        return self._scores(text, [reference, *rows])


class _Row(NamedTuple):
    """One row of scores: the answer's tokens as the server split them and their log-probs; ``cut`` when the first
    token reached into the chat template (``": The"``) and was cut to its part in the answer, so that its log-prob
    is not that of any token a generation of the answer could have produced."""

    tokens: tuple[str, ...]
    logprobs: tuple[float, ...]
    cut: bool = False


def _aligned(reference: _Row, rows: Sequence[_Row]) -> bool:
    """Whether every scored row is of exactly the generated tokens, so that the generation can be row 0."""
    return all(not row.cut and row.tokens == reference.tokens for row in rows)


def _answer_tail(entries: list[Any], text: str, name: str) -> _Row:
    """The answer's tokens and log-probs: the shortest tail of the prompt tokens whose text ends with ``text``.

    vLLM's ``prompt_logprobs`` has one entry per prompt token (``None`` for the first): a mapping from token id to
    ``{"logprob", "decoded_token"}``; with ``prompt_logprobs=0`` it holds the prompt token alone. A first answer
    token that also covers the end of the template (``": The"``) is cut to its part in the answer (``cut``).
    """
    tokens: list[str] = []
    logprobs: list[float] = []
    covered = 0
    for entry in reversed(entries):
        if covered >= len(text):
            break
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise BackendError(f"{name}: malformed prompt_logprobs entry (expected one token record): {entry!r:.80}")
        (record,) = entry.values()
        token, logprob = _field(record, "decoded_token"), _field(record, "logprob")
        if not isinstance(token, str) or not isinstance(logprob, int | float):
            raise BackendError(f"{name}: malformed prompt_logprobs record: {record!r:.80}")
        tokens.insert(0, token)
        logprobs.insert(0, min(float(logprob), 0.0))
        covered += len(token)
    joined = "".join(tokens)
    if not tokens or not joined.endswith(text):
        raise ScoringUnavailable(
            f"{name}: the scored prompt does not end with the answer text (the chat template changes it), "
            "so the answer's tokens cannot be found"
        )
    extra = len(joined) - len(text)
    tokens[0] = tokens[0][extra:]
    return _Row(tuple(tokens), tuple(logprobs), cut=extra > 0)


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
