"""How the guard behaves off its calibration data (issues 13 and 28): held-out and unseen corruption families,
reworded questions.

    .venv/bin/python bench/shift.py [--model DIR] [--n-cal 3000] [--n 150] [--n-reworded 300] [--n-clean 300]

One run scores, with the model and the probe of the shipped calibration artifact:
- the calibration rows exactly as ``guardrail calibrate`` does by default (``--n-cal`` easy-VQA calibration-split
  questions under the six ``CORRUPTIONS``, plus garbled-question copies of a quarter of them);
- fresh test-split images for every evaluation set below.

Then it reports, next to each other:
1. **Leave one corruption family out.** For each of the six families, an artifact is fitted on the calibration
   rows *without* that family and evaluated on test images corrupted by it (severities 1-5): overall ECE10 against
   answer correctness, visual ECE10 and perception AUROC against perception correctness, and, under the default
   policy's first decision, coverage (accepted at the first answer) and the accuracy of accepted answers. Each
   fold is fitted twice, with the shift handling (familiarity reference and shift discounts) and without it, so
   that the gain is measured, not assumed.
2. **Held-out families** (``HELDOUT_CORRUPTIONS``: never in any calibration), **unseen families**
   (``UNSEEN_CORRUPTIONS``: shear, wave, motion_blur, overexpose, fixed on 2026-12-07 at 18:03 UTC in commit
   "Four evaluation-only corruption kinds", before the stability probe's views, count and weight were chosen and
   before any artifact was fitted with it; no figure of them was looked at while choosing anything, and nothing but
   this bench reads them) and the **reworded questions** (``guardrail.data.reworded``, evaluation-only templates),
   under the shipped artifact: the same figures, and the full guarded call under the default policy (re-asks and
   more views included): coverage, accuracy of accepted answers, and wrong answers accepted as a share of all
   items.

Every first-answer figure is also given under ablations fitted on the same calibration rows: *without_shift* (no
familiarity reference, no shift discounts), *without_stability* (the stability probe's fall taken out of the
statistic s and of the discounts: the visual probe alone, as before issue 28) and *without_cross_fit* (discounts and
combiner learned from in-sample parts). The stability probe's setting itself (views, count, weight) is the shipped
artifact's, chosen on every calibration family: in a leave-one-family-out fold only the calibrators, discounts and
normalisation are refitted without the family.
3. **In distribution**: the corrupted test split (all six families) and clean test images, under the shipped
   artifact: the figures that must not get worse.
4. **More views**: on the first answers whose visual confidence is in doubt (below 0.5), the answer accuracy
   before and after the default policy's zoom views, appended and replacing the image.

Results go to bench/results/shift.json with the commit and command that produced them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _provenance import provenance, relative
from rich.console import Console
from rich.progress import track
from rich.table import Table

from guardrail.calibration.artifact import CalibrationArtifact, fingerprint_model, load_artifact
from guardrail.calibration.collect import ScoredItem, score_items, scored_arrays
from guardrail.calibration.metrics import auroc, expected_calibration_error
from guardrail.calibration.perturbation_choice import ProbeSetting
from guardrail.calibration.pipeline import apply_artifact, calibrate_rows
from guardrail.confidence.normalization import VisualNormalization
from guardrail.confidence.probe import visual_statistic
from guardrail.data.corruptions import CORRUPTIONS, HELDOUT_CORRUPTIONS, UNSEEN_CORRUPTIONS
from guardrail.data.labelled import LabelledItem, easyvqa_items
from guardrail.data.question_noise import with_question_noise
from guardrail.data.reworded import reworded_items
from guardrail.errors import InputError
from guardrail.policy.engine import decide
from guardrail.policy.loader import load_policy
from guardrail.pretrained import default_model_path, find_artifact, resolve_certified
from guardrail.types import Action, Confidence

RESULTS = Path(__file__).parent / "results" / "shift.json"
SEVERITIES = (1, 2, 3, 4, 5)


def _metric(fn: Callable[..., float], scores: np.ndarray, labels: np.ndarray) -> float | None:
    known = ~np.isnan(scores) & ~np.isnan(labels)
    if known.sum() < 2 or (len(set(labels[known].tolist())) < 2 and fn is auroc):
        return None
    return round(float(fn(scores[known], labels[known])), 4)


def _ece10(scores: np.ndarray, labels: np.ndarray) -> float | None:
    return _metric(lambda c, y: expected_calibration_error(c, y, n_bins=10), scores, labels)


def evaluate(rows: Sequence[ScoredItem], artifact: CalibrationArtifact, policy_name: str = "default") -> dict[str, Any]:
    """Calibrated first-answer figures of ``rows`` under ``artifact`` (see the module docstring)."""
    calibrator = artifact.decoupled_calibrator()
    policy = resolve_certified(load_policy(policy_name), artifact)
    measured = apply_artifact(rows, artifact)
    confidences = [Confidence() if r.signals is None else calibrator.calibrate(r.signals) for r in measured]

    def column(name: str) -> np.ndarray:
        return np.array([np.nan if (v := c.get(name)) is None else v for c in confidences], dtype=np.float64)  # type: ignore[arg-type]

    arrays = scored_arrays(measured)
    answer, perception = arrays["answer_correct"], arrays["perception_correct"]
    overall, visual, familiarity = column("overall"), column("visual"), column("familiarity")
    accepted = np.array([decide(policy, c, attempt=0).action is Action.ACCEPT for c in confidences])
    return {
        "n": len(rows),
        "answer_accuracy": round(float(np.mean(answer)), 4),
        "perception_accuracy": None if np.all(np.isnan(perception)) else round(float(np.nanmean(perception)), 4),
        "mean_overall": None if np.all(np.isnan(overall)) else round(float(np.nanmean(overall)), 4),
        "overall_ece10": _ece10(overall, answer),
        "visual_ece10": _ece10(visual, perception),
        "visual_auroc_perception": _metric(auroc, visual, perception),
        "overall_auroc_answer": _metric(auroc, overall, answer),
        "median_familiarity": None if np.all(np.isnan(familiarity)) else round(float(np.nanmedian(familiarity)), 4),
        "unfamiliar_below_0.01": round(float(np.mean(familiarity < 0.01)), 4),
        "first_answer_coverage": round(float(accepted.mean()), 4),
        "first_answer_accepted_accuracy": None if not accepted.any() else round(float(answer[accepted].mean()), 4),
        "first_answer_wrong_accepted_share": round(float(np.mean(accepted & (answer == 0))), 4),
    }


def without_stability(rows: Sequence[ScoredItem], grounding_weight: float) -> list[ScoredItem]:
    """The rows as the visual probe alone would have measured them: the stability features dropped, s recomputed
    without the percept's fall (the same answers and probe rows; no re-scoring)."""
    normalization = VisualNormalization(grounding_weight=grounding_weight)
    out = []
    for row in rows:
        if row.signals is None:
            out.append(row)
            continue
        features = {k: v for k, v in row.signals.features.items() if not k.startswith("stability")}
        plain = dataclasses.replace(row, signals=row.signals.model_copy(update={"features": features}))
        s = visual_statistic(features, grounding_weight)
        out.append(plain if s is None else plain.with_visual(s, normalization))
    return out


def guarded(guard: Any, items: Sequence[LabelledItem], description: str) -> dict[str, Any]:
    """The full guarded call on every item: coverage, accuracy of accepted answers, wrong-and-accepted share."""
    from guardrail.responses import answers_match

    statuses, correct, calls = [], [], []
    for item in track(items, description=description):
        result = guard.run(item.request)
        statuses.append(result.status)
        calls.append(len(result.attempts))
        correct.append(result.accepted and answers_match(result.answer, item.answer))
    accepted = np.array([s == "accepted" for s in statuses])
    right = np.array(correct)
    return {
        "n": len(items),
        "coverage": round(float(accepted.mean()), 4),
        "accepted_accuracy": None if not accepted.any() else round(float(right[accepted].mean()), 4),
        "wrong_accepted": int((accepted & ~right).sum()),
        "wrong_accepted_share": round(float(np.mean(accepted & ~right)), 4),
        "abstained": statuses.count("abstained"),
        "escalated": statuses.count("escalated"),
        "mean_model_calls": round(float(np.mean(calls)), 3),
    }


def more_views(backend: Any, rows: Sequence[ScoredItem], artifact: CalibrationArtifact) -> dict[str, Any]:
    """Answer accuracy on perception-doubt first answers (visual < 0.5), before and after zoom views."""
    from guardrail.responses import answers_match
    from guardrail.types import GenerationOptions
    from guardrail.views import ZoomProvider

    calibrator = artifact.decoupled_calibrator()
    doubt = [
        r
        for r in apply_artifact(rows, artifact)
        if r.signals is not None and (v := calibrator.calibrate(r.signals).visual) is not None and v < 0.5
    ]
    zoom = ZoomProvider()
    out: dict[str, Any] = {"n": len(doubt), "before": None, "append": None, "replace": None}
    if not doubt:
        return out
    out["before"] = round(float(np.mean([r.answer_correct for r in doubt])), 4)
    for mode in ("append", "replace"):
        right, refused = [], 0
        for row in track(doubt, description=f"more views ({mode})"):
            views = zoom(row.item.request, 1 if mode == "replace" else 2)
            request = (
                row.item.request.with_images(views) if mode == "append" else row.item.request.replacing_images(views)
            )
            try:
                generation = backend.generate(request, GenerationOptions(attempt=1, seed=1))
            except InputError:  # more than the model's positions take (the reference model: 3 images): no answer
                refused += 1
                right.append(False)
                continue
            right.append(answers_match(generation.answer, row.item.answer))
        out[mode] = round(float(np.mean(right)), 4)
        out[f"{mode}_refused"] = refused
    return out


def run(model_dir: Path, n_cal: int, n: int, n_reworded: int, n_clean: int, seed: int) -> dict[str, Any]:
    import torch

    from guardrail.backends.transformers import TransformersBackend

    torch.set_num_threads(1)  # one item at a time: a second thread mostly waits, and thrashes on a busy machine
    from guardrail.pretrained import load_guard

    start = time.perf_counter()
    artifact_path = find_artifact(model_dir)
    if artifact_path is None:
        raise SystemExit(f"{model_dir} has no calibration artifact: run `guardrail calibrate` first")
    shipped = load_artifact(artifact_path, expected_model_fingerprint=fingerprint_model(model_dir))
    backend = TransformersBackend.from_pretrained(model_dir)
    fitted_with = shipped.info.get("estimator") or {}
    setting = ProbeSetting.from_info(fitted_with)
    probe = setting.estimator(draws=int(fitted_with.get("draws", 1)))  # raw signals

    def scored(items: Sequence[LabelledItem], description: str) -> list[ScoredItem]:
        return score_items(backend, probe, track(items, description=description))

    calibration = scored(
        with_question_noise(easyvqa_items("calibration", limit=n_cal, seed=seed), 0.25, seed=seed), "calibration"
    )
    info = {"estimator": shipped.info.get("estimator")}
    fit = functools.partial(
        calibrate_rows,
        seed=seed,
        info=info,
        model_fingerprint=shipped.model_fingerprint,
        data_fingerprint="bench",
        grounding_weight=setting.grounding_weight,
        stability_weight=setting.stability_weight,
    )
    w = setting.grounding_weight

    def ablations(cal: Sequence[ScoredItem]) -> dict[str, tuple[CalibrationArtifact, bool]]:
        """Artifacts fitted on ``cal``, each with whether it reads rows without the stability features."""
        plain = without_stability(cal, w)
        return {
            "with_shift": (fit(cal, shift=True), False),
            "without_shift": (fit(cal, shift=False), False),
            "without_stability": (fit(plain, shift=True, stability_weight=0.0), True),
            "without_cross_fit": (fit(cal, shift=True, cross_fit=False), False),
        }

    def under(rows: Sequence[ScoredItem], fitted: dict[str, tuple[CalibrationArtifact, bool]]) -> dict[str, Any]:
        plain = without_stability(rows, w)
        return {name: evaluate(plain if bare else rows, artifact) for name, (artifact, bare) in fitted.items()}

    families: dict[str, Any] = {}
    for family in CORRUPTIONS:
        rows = scored(
            easyvqa_items("test", limit=n, seed=seed + 1, corruptions=(family,), severities=SEVERITIES), family
        )
        keep = [r for r in calibration if r.item.tags.get("corruption") != family]
        families[family] = under(rows, ablations(keep))
    full = ablations(calibration)

    guard = load_guard(model_dir)

    def shifted(kinds: Sequence[str], offset: int) -> tuple[dict[str, Any], list[ScoredItem]]:
        out: dict[str, Any] = {}
        every: list[ScoredItem] = []
        for family in kinds:
            items = easyvqa_items("test", limit=n, seed=seed + offset, corruptions=(family,), severities=SEVERITIES)
            rows = scored(items, family)
            every += rows
            out[family] = {"shipped": evaluate(rows, shipped), **under(rows, full)}
            out[family]["guarded"] = guarded(guard, items, f"guarded {family}")
        return out, every

    heldout, heldout_rows = shifted(tuple(HELDOUT_CORRUPTIONS), 2)
    unseen, unseen_rows = shifted(tuple(UNSEEN_CORRUPTIONS), 5)
    reworded = reworded_items("test", group="evaluation", limit=n_reworded, seed=seed)
    reworded_rows = scored(reworded, "reworded")
    templates = sorted({r.item.tags["template"] for r in reworded_rows})
    reworded_result = {"shipped": evaluate(reworded_rows, shipped), **under(reworded_rows, full)}
    reworded_result["guarded"] = guarded(guard, reworded, "guarded reworded")
    reworded_result["by_template"] = {
        t: evaluate([r for r in reworded_rows if r.item.tags["template"] == t], shipped) for t in templates
    }

    corrupted = easyvqa_items("test", limit=max(n_clean, 3 * n), seed=seed + 3)
    clean = easyvqa_items("test", limit=n_clean, seed=seed + 4, corruptions=())
    corrupted_rows, clean_rows = scored(corrupted, "in distribution (corrupted)"), scored(clean, "clean")
    in_distribution = {
        "corrupted": {"shipped": evaluate(corrupted_rows, shipped), **under(corrupted_rows, full)},
        "clean": {"shipped": evaluate(clean_rows, shipped), **under(clean_rows, full)},
    }
    in_distribution["corrupted"]["guarded"] = guarded(guard, corrupted, "guarded corrupted")
    in_distribution["clean"]["guarded"] = guarded(guard, clean, "guarded clean")
    return {
        **provenance(),
        "model": relative(model_dir),
        "artifact": relative(artifact_path),
        "settings": {"n_cal": n_cal, "n": n, "n_reworded": n_reworded, "n_clean": n_clean, "seed": seed},
        "seconds": round(time.perf_counter() - start, 1),
        "leave_one_family_out": families,
        "heldout_families": heldout,
        "unseen_families": unseen,
        "reworded": reworded_result,
        "in_distribution": in_distribution,
        "more_views": more_views(backend, corrupted_rows + heldout_rows + unseen_rows, shipped),
    }


def _table(results: dict[str, Any]) -> Table:
    table = Table(title="Shift (first answers; guarded = the full call under the default policy)")
    for column in ("set", "calibration", "acc", "overall ECE10", "visual ECE10", "visual AUROC", "coverage",
                   "acc | accepted", "wrong & accepted"):  # fmt: skip
        table.add_column(column, justify="right" if column != "set" else "left")

    def add(name: str, label: str, r: dict[str, Any]) -> None:
        def f(key: str) -> str:
            value = r.get(key)
            return "-" if value is None else f"{value:.3f}"

        table.add_row(name, label, f("answer_accuracy"), f("overall_ece10"), f("visual_ece10"),
                      f("visual_auroc_perception"), f("first_answer_coverage"), f("first_answer_accepted_accuracy"),
                      f("first_answer_wrong_accepted_share"))  # fmt: skip

    for family, folds in results["leave_one_family_out"].items():
        for label, r in folds.items():
            add(f"held out: {family}", label, r)
    for family, r in results["heldout_families"].items():
        add(f"held-out kind: {family}", "shipped", r["shipped"])
    for family, r in results["unseen_families"].items():
        add(f"unseen kind: {family}", "shipped", r["shipped"])
    add("reworded", "shipped", results["reworded"]["shipped"])
    for name, r in results["in_distribution"].items():
        add(f"in distribution: {name}", "shipped", r["shipped"])
    return table


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--n-cal", type=int, default=3000, help="calibration-split questions (as guardrail calibrate)")
    parser.add_argument("--n", type=int, default=150, help="test questions per corruption family")
    parser.add_argument("--n-reworded", type=int, default=300, help="reworded test questions")
    parser.add_argument("--n-clean", type=int, default=300, help="clean test questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = run(args.model or default_model_path(), args.n_cal, args.n, args.n_reworded, args.n_clean, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console = Console()
    console.print(_table(results))
    console.print(f"written to {args.out}")
    return results


if __name__ == "__main__":
    main()
