"""Calibration on synthetic data: how to form ``overall``, and how often certified thresholds fail.

Run: ``.venv/bin/python bench/calibration_synthetic.py`` (about a minute on 2 CPU cores). Writes
``bench/results/calibration_synthetic.json`` and prints two tables.

1. Combiners. A world where perception and reasoning fail separately (perception right with probability pv,
   reasoning right given perception with pr, a lucky right answer 1 time in 13 when perception is wrong; raw
   scores are mis-calibrated monotone transforms of pv and pr). Each combiner of ``DecoupledCalibrator`` is fitted
   on n_train rows and scored on 50,000 fresh rows: ECE (10 and 15 bins), Brier and AUROC of overall against
   answer correctness, with the ECE noise floor of a calibrated predictor at the same n for scale.
2. Risk control. Worlds with known selective risk (c ~ U(0, 1), P(correct | c) = c, so "accept c >= t" has risk
   (1 - t)/2): the share of runs whose certified threshold (SGR, and Learn-then-Test with Bonferroni over a fixed
   grid) has true risk > alpha, against delta, and the same for the naive threshold (lowest t with empirical
   risk <= alpha).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from _provenance import provenance

from guardrail.calibration import DecoupledCalibrator, auroc, brier_score, certify_threshold, expected_calibration_error
from guardrail.calibration.decoupled import COMBINERS
from guardrail.calibration.risk import certify_threshold_ltt
from guardrail.calibration.summary import ece_noise_floor

OUT = Path(__file__).parent / "results" / "calibration_synthetic.json"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.asarray(np.log(p) - np.log1p(-p))


def decoupled_world(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pv, pr = rng.beta(4, 1.5, n), rng.beta(4, 1.5, n)
    perception = rng.random(n) < pv
    answer = np.where(perception, rng.random(n) < pr, rng.random(n) < 1 / 13)
    return {
        "visual": _sigmoid(2.0 * _logit(pv) + 1.0),
        "reasoning": _sigmoid(0.5 * _logit(pr) + 1.0),
        "perception": perception.astype(float),
        "answer": answer.astype(float),
    }


def bench_combiners() -> list[dict[str, Any]]:
    test = decoupled_world(50_000, seed=999)
    rows = []
    for n_train in (500, 2000):
        for part in ("platt", "isotonic"):
            for combiner in COMBINERS:
                eces10, eces15, briers, areas = [], [], [], []
                for seed in range(5):
                    train = decoupled_world(n_train, seed)
                    calibrator = DecoupledCalibrator(visual=part, reasoning=part, combiner=combiner).fit(
                        train["visual"],
                        train["reasoning"],
                        answer_correct=train["answer"],
                        perception_correct=train["perception"],
                    )
                    overall = calibrator.predict_components(test["visual"], test["reasoning"])["overall"]
                    eces10.append(expected_calibration_error(overall, test["answer"], 10))
                    eces15.append(expected_calibration_error(overall, test["answer"], 15))
                    briers.append(brier_score(overall, test["answer"]))
                    areas.append(auroc(overall, test["answer"]))
                rows.append(
                    {
                        "n_train": n_train,
                        "part_calibrator": part,
                        "combiner": combiner,
                        "ece_10": float(np.mean(eces10)),
                        "ece_15": float(np.mean(eces15)),
                        "brier": float(np.mean(briers)),
                        "auroc": float(np.mean(areas)),
                        "seeds": 5,
                    }
                )
    return rows


def bench_risk(runs: int = 1000) -> list[dict[str, Any]]:
    rows = []
    for alpha, n in ((0.1, 500), (0.2, 500), (0.1, 2000), (0.05, 5000)):
        delta = 0.1
        violations = naive = infeasible = ltt_violations = ltt_infeasible = 0
        coverage, ltt_coverage = [], []
        for seed in range(runs):
            rng = np.random.default_rng(seed)
            c = rng.random(n)
            y = (rng.random(n) < c).astype(float)
            result = certify_threshold(c, y, alpha=alpha, delta=delta)
            if result.feasible and result.threshold is not None:
                violations += (1 - result.threshold) / 2 > alpha
                coverage.append(result.coverage)
            else:
                infeasible += 1
            ltt = certify_threshold_ltt(c, y, alpha=alpha, delta=delta)
            if ltt.feasible and ltt.threshold is not None:
                ltt_violations += (1 - ltt.threshold) / 2 > alpha
                ltt_coverage.append(ltt.coverage)
            else:
                ltt_infeasible += 1
            order = np.argsort(-c, kind="stable")
            risk = np.cumsum(1 - y[order]) / np.arange(1, n + 1)
            naive += (1 - c[order][np.nonzero(risk <= alpha)[0].max()]) / 2 > alpha
        rows.append(
            {
                "alpha": alpha,
                "delta": delta,
                "n": n,
                "runs": runs,
                "sgr_violation_rate": violations / runs,
                "naive_violation_rate": naive / runs,
                "sgr_infeasible_rate": infeasible / runs,
                "sgr_mean_coverage_when_feasible": float(np.mean(coverage)) if coverage else None,
                "ltt_violation_rate": ltt_violations / runs,
                "ltt_infeasible_rate": ltt_infeasible / runs,
                "ltt_mean_coverage_when_feasible": float(np.mean(ltt_coverage)) if ltt_coverage else None,
                "best_possible_coverage": 2 * alpha,
            }
        )
    return rows


def main() -> None:
    start = time.perf_counter()
    combiners = bench_combiners()
    floor = ece_noise_floor(np.full(50_000, 0.5), n_bins=10, n_draws=200)
    risk = bench_risk()
    result = {
        **provenance(__file__),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "seconds": round(time.perf_counter() - start, 1),
        "ece_10_noise_floor_at_50000": {"mean": floor.mean, "high": floor.high},
        "combiners": combiners,
        "risk_control": risk,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'n':>5} {'parts':>8} {'combiner':>18} {'ECE10':>7} {'ECE15':>7} {'Brier':>7} {'AUROC':>7}")
    for r in combiners:
        print(
            f"{r['n_train']:>5} {r['part_calibrator']:>8} {r['combiner']:>18} {r['ece_10']:7.4f} {r['ece_15']:7.4f}"
            f" {r['brier']:7.4f} {r['auroc']:7.4f}"
        )
    print(f"\n{'alpha':>6} {'n':>5} {'runs':>5} {'naive viol':>11}" + " {:>26} {:>26}".format("SGR", "LTT"))
    print(" " * 30 + " {:>8} {:>8} {:>8}".format("viol", "infeas", "cover") * 2)
    for r in risk:
        cells = []
        for method in ("sgr", "ltt"):
            cov = r[f"{method}_mean_coverage_when_feasible"]
            cells.append(
                f" {r[f'{method}_violation_rate']:8.3f} {r[f'{method}_infeasible_rate']:8.3f}"
                f" {'-' if cov is None else format(cov, '.3f'):>8}"
            )
        print(f"{r['alpha']:>6} {r['n']:>5} {r['runs']:>5} {r['naive_violation_rate']:11.3f}" + "".join(cells))
    print(f"\nwrote {OUT} in {result['seconds']} s")


if __name__ == "__main__":
    main()
