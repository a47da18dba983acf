"""The pieces of ``GuardrailChatModel`` that do not depend on LangChain's model class.

- ``CallSettings``: the standard parameters of one call (construction values, overridden per call), checked;
- ``configured``: a backend that fills the caller's settings into the options the guard generates with, so that a
  guarded call honours ``max_tokens``, ``stop`` and ``temperature`` on every attempt (re-asks and fallbacks too);
- ``call_backend`` / ``acall_backend``: one plain backend call with a time limit and retries (run the one way a
  call runs under a time limit: ``guardrail._pool.run_within`` and its async twins, as the guard's are);
- ``cut_at_stop`` and ``pieces``: the text a caller sees, ended at the first stop sequence, and cut into the
  chunks it is streamed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._pool import OutOfTime, arun_within, await_within, run_within
from ..backends.base import AsyncBackend, Backend
from ..backends.batching import checked_generation
from ..errors import BackendError, BackendTimeout
from ..types import Generation, GenerationOptions, Request

__all__ = [
    "CallSettings",
    "acall_backend",
    "call_backend",
    "configured",
    "cut_at_stop",
    "pieces",
]

_TOOL_KWARGS = frozenset({"tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"})
_CALL_KWARGS = frozenset({"model", "temperature", "max_tokens", "timeout", "stream"})
"""Per-call keyword arguments the chat model honours (``stream`` is LangChain's own switch, read before the call)."""


@dataclass(frozen=True)
class CallSettings:
    """The standard parameters of one call: ``None`` / ``()`` leave the backend's (or the policy's) own choice."""

    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    timeout: float | None = None

    @classmethod
    def of_call(
        cls, defaults: CallSettings, stop: Sequence[str] | None, kwargs: Mapping[str, Any], *, model: str
    ) -> CallSettings:
        """The settings of one call: ``defaults`` (the constructor's) overridden by the call's arguments.

        Arguments the chat model cannot honour are refused, never dropped: tools (``NotImplementedError``, with a
        hint), another ``model`` than the one it answers with and anything unknown (``ValueError`` /
        ``TypeError``).
        """
        tools = sorted(_TOOL_KWARGS & set(kwargs))
        if tools:
            raise NotImplementedError(
                f"GuardrailChatModel({model!r}) cannot call tools (got {', '.join(tools)}): it answers questions "
                "about images. Plan tool calls with another chat model and guard vision calls with "
                "GuardrailMiddleware."
            )
        unknown = sorted(set(kwargs) - _CALL_KWARGS)
        if unknown:
            raise TypeError(
                f"GuardrailChatModel got unsupported call arguments {unknown}; it takes "
                f"{sorted(_CALL_KWARGS - {'stream'})} and `stop`"
            )
        requested = kwargs.get("model")
        if requested is not None and requested != model:
            raise ValueError(
                f"GuardrailChatModel answers with model {model!r}, got model={requested!r}: it cannot switch "
                "models per call; build one chat model per backend"
            )
        merged = {k: kwargs[k] for k in ("temperature", "max_tokens", "timeout") if kwargs.get(k) is not None}
        settings = CallSettings(
            temperature=merged.get("temperature", defaults.temperature),
            max_tokens=merged.get("max_tokens", defaults.max_tokens),
            stop=defaults.stop if stop is None else tuple(stop),
            timeout=merged.get("timeout", defaults.timeout),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Validate every value, naming the parameter, the value and what is expected."""
        if self.temperature is not None and (isinstance(self.temperature, bool) or not self.temperature >= 0):
            raise ValueError(f"`temperature` must be a number >= 0, got {self.temperature!r}")
        if self.max_tokens is not None and (type(self.max_tokens) is not int or self.max_tokens < 1):
            raise ValueError(f"`max_tokens` must be an int >= 1, got {self.max_tokens!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not self.timeout > 0):
            raise ValueError(f"`timeout` must be a number of seconds > 0, got {self.timeout!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"`stop` must be a list of non-empty strings, got {list(self.stop)!r}")

    def options(self, base: GenerationOptions | None = None) -> GenerationOptions:
        """``base`` (the guard's options for an attempt) with these settings where it leaves them unset: a
        policy's re-ask temperature wins over the caller's."""
        base = base or GenerationOptions()
        return base.model_copy(
            update={
                "temperature": base.temperature if base.temperature is not None else self.temperature,
                "max_new_tokens": base.max_new_tokens or self.max_tokens,
                "stop": base.stop or self.stop,
            }
        )

    @property
    def shapes_generation(self) -> bool:
        """Whether these settings change what a backend is asked for."""
        return self.temperature is not None or self.max_tokens is not None or bool(self.stop)


# ---------------------------------------------------------------------------------------------------------------
# A backend that carries the caller's settings into the guard's attempts.


class _Configured:
    """Delegates everything to ``inner`` (scoring, ``max_images``, ...) and fills ``settings`` into its options."""

    def __init__(self, inner: Backend, settings: CallSettings) -> None:
        self._inner = inner
        self._settings = settings

    @property
    def name(self) -> str:
        """The inner backend's name."""
        return self._inner.name

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__") or attribute == "_inner":  # copy/pickle probes before __init__ ran
            raise AttributeError(attribute)
        return getattr(self._inner, attribute)

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        """The inner ``generate`` with the settings filled in."""
        return self._inner.generate(request, self._settings.options(options))


class _AsyncConfigured(_Configured):
    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        """The inner ``agenerate`` with the settings filled in."""
        inner = self._inner
        assert isinstance(inner, AsyncBackend)
        return await inner.agenerate(request, self._settings.options(options))


def configured(backend: Backend, settings: CallSettings) -> Backend:
    """``backend`` with ``settings`` filled into every generation it is asked for (async when it is)."""
    if not settings.shapes_generation:
        return backend
    wrapper = _AsyncConfigured if isinstance(backend, AsyncBackend) else _Configured
    return wrapper(backend, settings)


# ---------------------------------------------------------------------------------------------------------------
# One plain backend call, with a time limit and retries.


def _too_slow(backend: Backend, timeout: float) -> BackendTimeout:
    return BackendTimeout(f"{backend.name}: no answer within the timeout of {timeout:g} s")


def _once(backend: Backend, request: Request, options: GenerationOptions, timeout: float | None) -> Generation:
    try:
        return run_within(lambda: checked_generation(backend.generate(request, options)), timeout)
    except OutOfTime:  # the worker finishes the call and drops the answer; nobody waits for it
        assert timeout is not None
        raise _too_slow(backend, timeout) from None


async def _aonce(backend: Backend, request: Request, options: GenerationOptions, timeout: float | None) -> Generation:
    try:
        if isinstance(backend, AsyncBackend):
            return checked_generation(await await_within(backend.agenerate(request, options), timeout))
        return await arun_within(lambda: checked_generation(backend.generate(request, options)), timeout)
    except OutOfTime:
        assert timeout is not None
        raise _too_slow(backend, timeout) from None


def call_backend(backend: Backend, request: Request, settings: CallSettings, *, retries: int) -> Generation:
    """``backend.generate`` under ``settings`` (``timeout`` per try), tried again up to ``retries`` times after a
    ``BackendError`` (timeouts included); other errors (a bad image, a bad request) are raised at once."""
    options = settings.options()
    for attempt in range(retries + 1):
        try:
            return _once(backend, request, options, settings.timeout)
        except BackendError:
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


async def acall_backend(backend: Backend, request: Request, settings: CallSettings, *, retries: int) -> Generation:
    """The async twin of :func:`call_backend` (``agenerate`` when the backend has it, else a worker thread)."""
    options = settings.options()
    for attempt in range(retries + 1):
        try:
            return await _aonce(backend, request, options, settings.timeout)
        except BackendError:
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------------
# What the caller sees.


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to (not including) the earliest stop sequence in it, and whether one was found."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not ends:
        return text, False
    return text[: min(ends)], True


_PIECE = re.compile(r"\s*\S+\s*|\s+")


def pieces(text: str) -> list[str]:
    """``text`` cut into word-sized pieces that concatenate back to it exactly (whitespace kept)."""
    return _PIECE.findall(text)
