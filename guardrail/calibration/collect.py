"""Run a model and an estimator over labelled items and grade each answer: the rows calibration is fitted on.

Each row holds the raw signals and two labels: *answer correct* (the final answer equals the right one) and
*perception correct* (the ``<vision>`` text names what the image shows, where the item says what that is).
``guardrail calibrate``, the benchmarks and the demo all use this one pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..backends.base import Backend
from ..backends.batching import answer_each
from ..confidence.base import Estimator
from ..confidence.feature_names import VISUAL_CERTAINTY, VISUAL_SCORE
from ..confidence.normalization import VisualNormalization
from ..data.labelled import LabelledItem
from ..responses import answers_match, parse_response
from ..types import Generation, GenerationOptions, Signals
from .decoupled import SHIFT_COVARIATES, VERBALIZED_FEATURES

__all__ = ["ScoredItem", "ascore_items", "remeasure", "score_items", "scored_arrays"]


@dataclass(frozen=True)
class ScoredItem:
    """One item after the model answered and the estimator measured: signals, grades, timings."""

    item: LabelledItem
    generation: Generation | None
    signals: Signals | None
    model_answer: str | None
    perception_text: str | None
    answer_correct: bool
    perception_correct: bool | None
    error: str | None
    generate_seconds: float
    estimate_seconds: float

    def with_visual(self, statistic: float, normalization: VisualNormalization) -> ScoredItem:
        """This row with the visual statistic s = ``statistic`` and the visual certainty ``normalization`` gives it,
        as the estimator would report them (rows without signals are returned as they are)."""
        if self.signals is None:
            return self
        visual = normalization.apply(statistic)
        features = {**self.signals.features, VISUAL_SCORE: statistic, VISUAL_CERTAINTY: visual}
        return dataclasses.replace(
            self, signals=self.signals.model_copy(update={"visual": visual, "features": features})
        )


def score_items(
    backend: Backend,
    estimator: Estimator,
    items: Iterable[LabelledItem],
    *,
    on_item: Callable[[ScoredItem], None] | None = None,
    batch_size: int = 1,
) -> list[ScoredItem]:
    """Answer, measure and grade every item; a failure is kept on its row (graded wrong), never skipped.

    With ``batch_size`` > 1 and a ``BatchBackend``, up to that many items are answered in one batched generation
    (each answer as it would be alone; a batch that fails is answered one by one); each is measured alone.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size}")
    rows = []
    pending = list(items)
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        for item, (generation, error, seconds) in zip(chunk, _answers(backend, chunk), strict=True):
            row = _scored(backend, estimator, item, generation, error, seconds)
            rows.append(row)
            if on_item is not None:
                on_item(row)
    return rows


_Answer = tuple[Generation | None, str | None, float]


def _answers(backend: Backend, items: list[LabelledItem]) -> list[_Answer]:
    """Each item's generation (or the failure), and the seconds it took (a batch's time shared evenly)."""
    answered = answer_each(backend, [i.request for i in items], [GenerationOptions()] * len(items))
    share = len(items) if answered.batched else 1
    return [
        (None, f"backend: {type(r).__name__}: {r}", s / share) if isinstance(r, Exception) else (r, None, s / share)
        for r, s in zip(answered.results, answered.seconds, strict=True)
    ]


def _scored(
    backend: Backend,
    estimator: Estimator,
    item: LabelledItem,
    generation: Generation | None,
    error: str | None,
    generate_seconds: float,
) -> ScoredItem:
    signals = None
    started = time.perf_counter()
    if generation is not None:
        try:
            signals = estimator.estimate(backend, item.request, generation)
        except Exception as exc:
            error = f"estimator: {type(exc).__name__}: {exc}"
    return _graded(item, generation, signals, error, generate_seconds, time.perf_counter() - started)


async def ascore_items(
    backend: Backend,
    estimator: Estimator,
    items: Iterable[LabelledItem],
    *,
    concurrency: int = 8,
    on_item: Callable[[ScoredItem], None] | None = None,
) -> list[ScoredItem]:
    """The async twin of :func:`score_items` for a remote model: up to ``concurrency`` items answered and measured
    at once (``agenerate`` / ``aestimate`` where the backend and estimator have them, else in a thread), rows in
    the items' order; a failure is kept on its row (graded wrong), never skipped. ``on_item`` as each row ends."""
    if concurrency < 1:
        raise ValueError(f"`concurrency` must be an int >= 1, got {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def one(item: LabelledItem) -> ScoredItem:
        async with gate:
            generation, signals, error = None, None, None
            started = time.perf_counter()
            try:
                agenerate = getattr(backend, "agenerate", None)
                if agenerate is not None:
                    generation = await agenerate(item.request, GenerationOptions())
                else:
                    generation = await asyncio.to_thread(backend.generate, item.request, GenerationOptions())
            except Exception as exc:
                error = f"backend: {type(exc).__name__}: {exc}"
            generated = time.perf_counter()
            if generation is not None:
                try:
                    aestimate = getattr(estimator, "aestimate", None)
                    if aestimate is not None:
                        signals = await aestimate(backend, item.request, generation)
                    else:
                        signals = await asyncio.to_thread(estimator.estimate, backend, item.request, generation)
                except Exception as exc:
                    error = f"estimator: {type(exc).__name__}: {exc}"
            row = _graded(item, generation, signals, error, generated - started, time.perf_counter() - generated)
        if on_item is not None:
            on_item(row)
        return row

    return list(await asyncio.gather(*(one(item) for item in items)))


def _graded(
    item: LabelledItem,
    generation: Generation | None,
    signals: Signals | None,
    error: str | None,
    generate_seconds: float,
    estimate_seconds: float,
) -> ScoredItem:
    """The row of ``item``: its answer and perception graded (``responses``), with the measurements given."""
    parsed = None if generation is None else parse_response(generation.text)
    answer = None if parsed is None else parsed.answer_text
    perception = None if parsed is None else parsed.perception_text
    return ScoredItem(
        item=item,
        generation=generation,
        signals=signals,
        model_answer=answer,
        perception_text=perception,
        answer_correct=answers_match(answer, item.answer),
        perception_correct=item.grade_perception(perception),
        error=error,
        generate_seconds=generate_seconds,
        estimate_seconds=estimate_seconds,
    )


def remeasure(
    backend: Backend,
    estimator: Estimator,
    rows: Iterable[ScoredItem],
    *,
    on_item: Callable[[ScoredItem], None] | None = None,
) -> list[ScoredItem]:
    """The rows with their signals measured again by ``estimator`` on the same answers (no new generation).

    Grades stay as they are (they depend on the answer alone); a row without a generation is kept unchanged.
    """
    out = []
    for row in rows:
        if row.generation is not None:
            start = time.perf_counter()
            signals, error = None, None
            try:
                signals = estimator.estimate(backend, row.item.request, row.generation)
            except Exception as exc:
                error = f"estimator: {type(exc).__name__}: {exc}"
            row = dataclasses.replace(row, signals=signals, error=error, estimate_seconds=time.perf_counter() - start)
        out.append(row)
        if on_item is not None:
            on_item(row)
    return out


FloatArray = npt.NDArray[np.float64]


def scored_arrays(rows: Sequence[ScoredItem]) -> dict[str, FloatArray]:
    """Column arrays of the rows (NaN = not measured / not known): the input of calibration and metrics.

    Columns: ``visual``, ``reasoning``, ``holistic`` (raw scores), ``visual_score`` (the raw statistic s before
    normalisation), ``familiarity`` and the shift covariates (``text_shift``, ``image_shift``: measured against a
    familiarity reference, else NaN), the model's own scores (``verbalized_vision``, ``verbalized_reasoning``: NaN
    where it wrote none or a malformed one), ``answer_correct``, ``perception_correct``.
    """

    def column(get: Callable[[ScoredItem], float | bool | None]) -> FloatArray:
        return np.array([np.nan if (v := get(r)) is None else float(v) for r in rows], dtype=np.float64)

    return {
        "visual": column(lambda r: None if r.signals is None else r.signals.visual),
        "reasoning": column(lambda r: None if r.signals is None else r.signals.reasoning),
        "holistic": column(lambda r: None if r.signals is None else r.signals.holistic),
        "visual_score": column(lambda r: None if r.signals is None else r.signals.features.get(VISUAL_SCORE)),
        "familiarity": column(lambda r: None if r.signals is None else r.signals.familiarity),
        **{
            name: column(lambda r, name=name: None if r.signals is None else r.signals.features.get(name))  # type: ignore[misc]
            for name in (*SHIFT_COVARIATES, *VERBALIZED_FEATURES.values())
        },
        "answer_correct": column(lambda r: r.answer_correct),
        "perception_correct": column(lambda r: r.perception_correct),
    }
