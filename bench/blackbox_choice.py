"""Benchmark: which black-box visual signal to use, chosen on calibration questions only.

    .venv/bin/python bench/blackbox_choice.py [--n 300] [--draws 4]

The black-box estimator (``confidence.blackbox.AgreementEstimator``) sees only generations, so its visual signal
can be measured with the shipped reference model in process (``TransformersBackend``, greedy, as vLLM serves it):
the same answers, without a server. Questions: the first ``--n`` of the 600 calibration questions
``bench/blackbox.py`` fits its artifacts on (``easyvqa_items("calibration", limit=600, seed=0)``: training images,
calibration damage kinds); no test question is read here.

Each candidate perturbation re-asks every question under ``--draws`` K perturbed copies of its image; per question
the candidates' signals are

- ``answer``: the fraction of re-queries whose final answer is the original's (the estimator's former signal);
- ``percept``: the mean Jaccard similarity of the words of the ``<vision>`` percept with the original's
  (``blackbox._percept_similarity``); ``percept_exact``: the fraction of re-queries whose percept is the same text;
- and, free with the answer's token log-probs, ``vision_mean_prob`` / ``vision_min_prob`` of the original percept's
  tokens, and ``percept+mean_prob`` / ``percept+min_prob``: the mean of ``percept`` and one of them (the estimator
  combines with the minimum).

Reported: AUROC of each for *perception correct*, at K = 1, 2 and 4 (the first K draws). The chosen setting and
why are in the results file (``chosen``). Results: bench/results/blackbox_choice.json (commit and command).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from array_api_compat import torch as torch_xp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "blackbox_choice.json"
sys.path.insert(0, str(ROOT))

from _provenance import provenance  # noqa: E402

from guardrail.calibration.metrics import auroc  # noqa: E402
from guardrail.confidence.blackbox import _percept_similarity  # noqa: E402
from guardrail.confidence.probe import perturbed_variants, span_masks, span_stats  # noqa: E402
from guardrail.confidence.settings import StabilitySetting  # noqa: E402
from guardrail.confidence.stability import stability_views  # noqa: E402
from guardrail.data.labelled import easyvqa_items  # noqa: E402
from guardrail.images import decode_image  # noqa: E402
from guardrail.pretrained import load_backend  # noqa: E402
from guardrail.reference import reference_model_path  # noqa: E402
from guardrail.responses import normalize_answer, parse_response  # noqa: E402
from guardrail.types import GenerationOptions, ImageBlock  # noqa: E402

CANDIDATES: dict[str, dict[str, Any]] = {
    "blackout p=0.25, 14 px (former default)": {"kind": "blackout", "probability": 0.25, "patch_size": 14},
    "blackout p=0.25, 8 px": {"kind": "blackout", "probability": 0.25, "patch_size": 8},
    "blackout p=0.35, 8 px": {"kind": "blackout", "probability": 0.35, "patch_size": 8},
    "blackout p=0.5, 8 px": {"kind": "blackout", "probability": 0.5, "patch_size": 8},
    "blackout p=0.75, 8 px": {"kind": "blackout", "probability": 0.75, "patch_size": 8},
    "stability views (mixed)": {"kind": "stability"},
}
KS = (1, 2, 4)


def _auroc(score: np.ndarray, correct: np.ndarray) -> float | None:
    keep = ~np.isnan(score) & ~np.isnan(correct)
    try:
        return round(float(auroc(score[keep], correct[keep])), 4)
    except Exception:  # one class only
        return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300, help="calibration questions (the first n of the 600)")
    parser.add_argument("--draws", type=int, default=max(KS), help="K perturbed re-queries per candidate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    record = provenance(argv=argv)
    items = easyvqa_items("calibration", limit=600, seed=0)[: args.n]
    backend = load_backend(reference_model_path())
    started = time.monotonic()
    originals = backend.generate_batch([it.request for it in items], [None] * len(items))
    parsed = [parse_response(g.text) for g in originals]
    graded = [it.grade_perception(p.perception_text) for it, p in zip(items, parsed, strict=True)]
    perception = np.array([np.nan if g is None else float(g) for g in graded])
    prob = {name: np.full(len(items), np.nan) for name in ("vision_mean_prob", "vision_min_prob")}
    for i, (g, p) in enumerate(zip(originals, parsed, strict=True)):
        logp = torch.tensor(list(g.token_logprobs), dtype=torch.float64)
        masks = span_masks(p, backend.token_offsets(list(g.token_ids)), len(logp), xp=torch_xp)
        stats = span_stats("vision", logp, masks.vision)
        for name in prob:
            prob[name][i] = stats.get(name, np.nan)
    figures: dict[str, Any] = {name: _auroc(v, perception) for name, v in prob.items()}
    results: dict[str, Any] = {}
    for label, spec in CANDIDATES.items():
        requests = []
        for item in items:
            images = [decode_image(b) for b in item.request.images]
            if spec["kind"] == "stability":
                variants = stability_views(images, StabilitySetting(count=args.draws))
            else:
                variants = perturbed_variants(
                    images, spec["kind"], draws=args.draws, patch_size=spec["patch_size"], seed=0,
                    probability=spec["probability"],
                )  # fmt: skip
            requests += [item.request.swapping_images([ImageBlock.from_pil(im) for im in v]) for v in variants]
        options = [GenerationOptions(seed=k % args.draws) for k in range(len(requests))]
        answers = backend.generate_batch(requests, options)
        per_draw = {name: np.zeros((len(items), args.draws)) for name in ("answer", "percept", "percept_exact")}
        for i, (g, p) in enumerate(zip(originals, parsed, strict=True)):
            for k, other in enumerate(answers[i * args.draws : (i + 1) * args.draws]):
                q = parse_response(other.text)
                per_draw["answer"][i, k] = normalize_answer(other.final_answer or "") == normalize_answer(
                    g.final_answer or ""
                )
                per_draw["percept"][i, k] = _percept_similarity(p.perception_text, q.perception_text)
                per_draw["percept_exact"][i, k] = p.perception_text.casefold() == q.perception_text.casefold()
        row: dict[str, Any] = {}
        for k in (k for k in KS if k <= args.draws):
            signals = {name: d[:, :k].mean(axis=1) for name, d in per_draw.items()}
            signals["percept+mean_prob"] = (signals["percept"] + prob["vision_mean_prob"]) / 2
            signals["percept+min_prob"] = (signals["percept"] + prob["vision_min_prob"]) / 2
            row[f"K={k}"] = {name: _auroc(v, perception) for name, v in signals.items()}
        row["mean_answer_agreement"] = round(float(per_draw["answer"].mean()), 4)
        row["mean_percept_agreement"] = round(float(per_draw["percept"].mean()), 4)
        results[label] = row
        print(label, json.dumps(row), flush=True)
    out = {
        **record,
        "what": "AUROC for perception correct of candidate black-box visual signals of the reference model in "
        "process, on calibration questions only (the choice of bench/blackbox.py's estimator setting)",
        "questions": f"easyvqa_items('calibration', limit=600, seed=0)[:{args.n}]",
        "perception_accuracy": round(float(np.nanmean(perception)), 4),
        "draws": args.draws,
        "seconds": round(time.monotonic() - started, 1),
        "free_with_logprobs": figures,
        "candidates": results,
        "chosen": CHOSEN,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


CHOSEN = (
    "Re-queries under the stability probe's mixed views (perturbation='stability'; small colour, rotation, shift "
    "and noise changes that keep the scene), compared by the agreement of the <vision> percept (word Jaccard, "
    "agreement='percept'); with token log-probs, visual = the mean of that agreement and the percept's minimum "
    "token probability (percept_logprobs=True). Why (AUROC for perception on these calibration questions, first "
    "run of this script): answer agreement ranks perception errors at 0.54-0.62 under every candidate (the final "
    "answer of a colour or shape question rarely flips although the percept does); percept agreement under "
    "blackout reaches only 0.60-0.66 at any probability or patch size (8-px patches match the reference model's "
    "encoder; 14-px were the former default), because blackened patches change the percept of right and wrong "
    "readings alike; under stability views it rises with K to 0.64 / 0.72 / 0.81 at K = 1 / 2 / 4: a percept that "
    "changes under views a person would not notice was a fragile one. The percept's own token probabilities, free "
    "when the API returns log-probs, rank best (mean 0.90, min 0.90); their mean with the percept agreement keeps "
    "that level (0.88 / 0.90 / 0.90 at K = 1 / 2 / 4 with the min) and adds a measurement that does not depend on "
    "one model's token probabilities. Stability views also need no patch size, which an API's input resolution "
    "leaves unknown: a sensible default for hosted models."
)

if __name__ == "__main__":
    main()
