"""The guarded call: generate, measure, calibrate, decide, act; loop until a terminal decision.

This module assembles and checks the parts; the call itself lives in two places one step down:

- ``loop.py``: the loop, written once as a generator (``GuardedCall.plan``) that *yields* the I/O it needs (a model
  attempt, a view fetch) and receives the outcome back; the decision after every attempt is the pure
  ``guardrail.policy.engine.decide``;
- ``effects.py``: performing that I/O (generate, estimate, calibrate; fetch views) within the time budget.

``Guard.run`` and ``Guard.arun`` drive the plan synchronously or with ``await`` (``_drive.py``): the twins cannot
drift apart.

Guarantees:
- at most ``budget.max_attempts`` model calls, and never waiting past ``budget.max_seconds``;
- any exception in the backend, estimator, calibrator or a view provider ends in ``on_error`` with the error
  kept in the result: never an unchecked answer;
- LangGraph control flow (interrupts) is re-raised, never swallowed;
- no state shared between calls: safe under threads and asyncio;
- never silently uncalibrated: without a fitted calibrator the confidences are raw scores (``calibrated=False`` on
  every ``Confidence``), construction warns (:class:`~guardrail.errors.UncalibratedWarning`, saying how to
  calibrate), and no answer is accepted unless the policy opted in (``accept_uncalibrated: true``, or
  ``allow_uncalibrated=True`` here): each ends in the policy's ``on_uncalibrated`` action instead.

"""

from __future__ import annotations

import asyncio
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import Any

from ._drive import adrive, drive
from .backends.base import Backend, BatchBackend
from .calibration.base import Calibrator, PassThroughCalibrator, calibration_advice, is_calibrated
from .confidence.base import Estimator
from .effects import Effects
from .errors import ConfigurationError, UncalibratedWarning
from .loop import GuardedCall
from .policy.schema import Policy
from .telemetry import CallTrace, Telemetry, default_telemetry
from .types import Action, Box, GuardResult, Request
from .views import PerceptMerger, TileProvider, TilesProvider, ViewProvider, ZoomProvider

__all__ = ["Guard", "uncalibrated_message"]


class Guard:
    """Guards calls to one vision-language model with a policy.

    >>> guard = Guard(backend, estimator=estimator, policy="default")   # doctest: +SKIP
    >>> result = guard.run(Request.from_question("What colour is the shape?", [image]))   # doctest: +SKIP
    >>> result.status, result.answer, result.confidence   # doctest: +SKIP
    """

    def __init__(
        self,
        backend: Backend,
        *,
        estimator: Estimator,
        calibrator: Calibrator | None = None,
        policy: Policy | str | Path = "default",
        view_providers: Mapping[str, ViewProvider] | None = None,
        fallbacks: Mapping[str, Backend] | None = None,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.monotonic,
        percept_mergers: Mapping[str, PerceptMerger] | None = None,
        allow_uncalibrated: bool = False,
    ) -> None:
        """``calibrator=None`` passes the raw scores through (:class:`PassThroughCalibrator`): the guard is then
        uncalibrated, and ``allow_uncalibrated=True`` is the opt-in that lets the policy's rules accept on raw
        scores (the same as ``accept_uncalibrated: true`` in the policy); without it, construction warns and every
        answer ends in ``on_uncalibrated``."""
        self.backend = backend
        self.estimator = estimator
        self.calibrator: Calibrator = calibrator if calibrator is not None else PassThroughCalibrator()
        self.policy = policy if isinstance(policy, Policy) else _load_policy(policy)
        self.calibrated = is_calibrated(self.calibrator)  # False: raw scores, no fitted calibrator
        if allow_uncalibrated and not self.policy.accept_uncalibrated:
            self.policy = self.policy.model_copy(update={"accept_uncalibrated": True})
        self.view_providers: dict[str, ViewProvider] = {
            "zoom": ZoomProvider(),
            "tiles": TilesProvider(),
            **(view_providers or {}),
        }
        self.percept_mergers: dict[str, PerceptMerger] = {"scenes": _scenes_merger, **(percept_mergers or {})}
        self.fallbacks: dict[str, Backend] = dict(fallbacks or {})
        self.telemetry = telemetry if telemetry is not None else default_telemetry()
        self.clock = clock
        self._check_references()
        self._effects = Effects(self.estimator, self.calibrator)
        if not self.calibrated and not self.policy.accept_uncalibrated:
            warnings.warn(UncalibratedWarning(uncalibrated_message(self)), stacklevel=_caller_level())

    def _check_references(self) -> None:
        """Fail at construction, not mid-call, when the policy names parts the guard does not have."""
        unresolved = self.policy.certified_bounds()
        if unresolved:
            where = ", ".join(f"{w} (max_error {b.max_error:g}, delta {b.delta:g})" for w, _, _, b in unresolved)
            raise ConfigurationError(
                f"policy {self.policy.name!r} asks for certified thresholds at {where}, but they have not been "
                "taken from a calibration artifact: build the guard with guardrail.load_guard(..., artifact=...) "
                "or resolve them with Policy.with_certified(...)"
            )
        specs: list[tuple[str, Any]] = [(self.policy.rule_label(i), r) for i, r in enumerate(self.policy.rules)]
        specs += [("otherwise", self.policy.otherwise), ("on_error", self.policy.on_error)]
        for where, spec in specs:
            if spec.action is Action.FETCH_MORE_VIEWS and spec.params["provider"] not in self.view_providers:
                raise ConfigurationError(
                    f"policy {self.policy.name!r} {where} uses view provider {spec.params['provider']!r}, but the "
                    f"guard has only {sorted(self.view_providers)}; pass view_providers={{...}}"
                )
            if spec.action is Action.FETCH_MORE_VIEWS and spec.params.get("mode") == "tile":
                self._check_tiles(where, spec.params["provider"], spec.params["merger"])
            if spec.action is Action.FALLBACK and spec.params["model"] not in self.fallbacks:
                raise ConfigurationError(
                    f"policy {self.policy.name!r} {where} falls back to model {spec.params['model']!r}, but the "
                    f"guard has {sorted(self.fallbacks) or 'no fallbacks'}; pass fallbacks={{...}}"
                )

    def _check_tiles(self, where: str, provider: str, merger: str) -> None:
        """Mode ``tile`` needs a tile provider (one that says where its views lie) and a registered merger."""
        if not isinstance(self.view_providers[provider], TileProvider):
            tiled = sorted(name for name, p in self.view_providers.items() if isinstance(p, TileProvider))
            raise ConfigurationError(
                f"policy {self.policy.name!r} {where} fetches views in mode tile from {provider!r}, which gives no "
                f"tiles (no tiles(request, count) method); tile providers here: {tiled}"
            )
        if merger not in self.percept_mergers:
            raise ConfigurationError(
                f"policy {self.policy.name!r} {where} merges percepts with {merger!r}, but the guard has only "
                f"{sorted(self.percept_mergers)}; pass percept_mergers={{...}}"
            )

    # -- the drivers: the loop's plan (loop.py), its effects performed (effects.py) ---------------------------------

    def run(self, request: Request) -> GuardResult:
        """Run one guarded call on the calling thread (model calls run on a worker when there is a time budget)."""
        with self._span(request) as trace:
            return drive(self._call(request, trace).plan(), self._effects.perform)

    async def arun(self, request: Request) -> GuardResult:
        """The async twin of :meth:`run`: the same plan, with the I/O awaited."""
        with self._span(request) as trace:
            return await adrive(self._call(request, trace).plan(), self._effects.aperform)

    def run_batch(self, requests: Sequence[Request], *, batch_size: int = 16) -> list[GuardResult]:
        """Guarded calls of many requests, their model attempts batched (``batch.py``); results in order.

        Each request is decided exactly as :meth:`run` decides it (same plan, same policy, same budget, which starts
        when the request is taken from the queue into a batch); attempts due at the same time on a ``BatchBackend``
        share one padded generation of up to ``batch_size`` requests.
        """
        from .batch import run_batch

        return run_batch(
            requests,
            open_span=self._span,
            planner=lambda request, trace: self._call(request, trace).plan(),
            effects=self._effects,
            batch_size=batch_size,
        )

    async def arun_batch(self, requests: Sequence[Request], *, batch_size: int = 16) -> list[GuardResult]:
        """The async twin of :meth:`run_batch`: batched on a worker thread for a ``BatchBackend``, else the calls
        awaited concurrently, ``batch_size`` at a time (e.g. a remote server that batches on its side)."""
        if isinstance(self.backend, BatchBackend):
            return await asyncio.to_thread(self.run_batch, requests, batch_size=batch_size)
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size}")
        slots = asyncio.Semaphore(batch_size)

        async def one(request: Request) -> GuardResult:
            async with slots:
                return await self.arun(request)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    def _span(self, request: Request) -> AbstractContextManager[CallTrace]:
        return self.telemetry.call(
            request, model=self.backend.name, policy=self.policy.name, policy_version=self.policy.version
        )

    def _call(self, request: Request, trace: CallTrace) -> GuardedCall:
        return GuardedCall(
            self.policy,
            self.backend,
            self.view_providers,
            self.fallbacks,
            self.clock,
            request,
            trace,
            percept_mergers=self.percept_mergers,
        )


def _scenes_merger(views: Sequence[tuple[Box, str]], width: int, height: int) -> str:
    """The scenes world's percept merger (``guardrail.data.scenes.merge_percepts``), imported when first used."""
    from .data.scenes import merge_percepts

    return merge_percepts(views, width, height)


def uncalibrated_message(guard: Guard) -> str:
    """What an uncalibrated guard tells its user: that it will not accept, and how to calibrate."""
    spec = guard.policy.on_uncalibrated
    return (
        f"the guard over model {guard.backend.name!r} has no calibration: its confidences are raw scores, not "
        f"probabilities, so policy {guard.policy.name!r} will accept no answer (each ends in on_uncalibrated: "
        f"{spec.action.value}). To guard it, {calibration_advice()}; load_guard then finds the artifact beside the "
        "model (or pass artifact=PATH; to Guard: calibrator=load_artifact(PATH).decoupled_calibrator(); a model "
        "behind a server that scores teacher-forced takes the artifact of the folder it serves). To decide on raw "
        "scores anyway, opt in explicitly: allow_uncalibrated=True (load_guard or Guard), or accept_uncalibrated: "
        "true in the policy"
    )


def _caller_level() -> int:
    """The ``stacklevel`` that makes a warning from ``Guard.__init__`` point at the first caller outside this
    package (the user's ``load_guard(...)`` or ``Guard(...)`` line, not ``pretrained.py``)."""
    package = str(Path(__file__).resolve().parent)
    frame: FrameType | None = sys._getframe(2)
    level = 2  # level 1: Guard.__init__, which warns; level 2: its caller
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _load_policy(policy: str | Path) -> Policy:
    from .policy.loader import load_policy

    return load_policy(policy)
