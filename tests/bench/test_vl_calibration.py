"""The VL-Calibration table's arithmetic: the model's own scores against the truth, and the paired seed test."""

from __future__ import annotations

import math
from typing import Any

import pytest

from guardrail.calibration.collect import ScoredItem
from guardrail.data.labelled import LabelledItem
from guardrail.types import Request, Signals
from tests.support.bench import load_bench

bench: Any = load_bench("vl_calibration")


def _row(v: float | None, r: float | None, answer: bool, perception: bool) -> ScoredItem:
    features = {k: s for k, s in (("verbalized_vision", v), ("verbalized_reasoning", r)) if s is not None}
    item = LabelledItem(request=Request.from_question("what colour is the shape?", []), answer="red")
    return ScoredItem(item, None, Signals(features=features), "red", "", answer, perception, None, 0.0, 0.0)


def test_scores_against_the_truth_with_the_harmonic_mean_as_overall() -> None:
    rows = [_row(1.0, 0.5, True, True), _row(0.5, 0.5, False, False)] * 10 + [_row(None, 0.9, True, True)]
    got = bench.verbalized_metrics(rows, single=False)
    assert got["accuracy"] == pytest.approx(11 / 21)
    assert got["scores_written"] == pytest.approx(20 / 21)
    # overall = 2vr/(v+r): 2/3 on the right answers, 1/2 on the wrong ones; the unwritten row is left out
    assert got["overall"]["n"] == 20
    assert got["overall"]["auroc"] == 1.0
    assert got["overall"]["ece10"] == pytest.approx(0.5 * (1 - 2 / 3) + 0.5 * 0.5)
    assert got["visual"]["ece10"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.5)
    assert got["reasoning"]["n"] == 21
    single = bench.verbalized_metrics(rows, single=True)
    assert single["overall"]["n"] == 21
    assert "visual" not in single


def test_a_difference_exceeds_seed_noise_only_beyond_the_t_critical_value() -> None:
    clear = bench.paired([0.10, 0.12, 0.11], [0.05, 0.06, 0.06])
    assert clear["mean"] == pytest.approx(-0.16 / 3)
    d = [-0.05, -0.06, -0.05]
    t = (sum(d) / 3) / (math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2) / math.sqrt(3))
    assert clear["t"] == pytest.approx(t)
    assert clear["exceeds_seed_noise"]  # |t| = 17.3 > 4.303
    noisy = bench.paired([0.10, 0.12, 0.11], [0.05, 0.16, 0.10])
    assert not noisy["exceeds_seed_noise"]
    assert bench.paired([0.1, None, None], [0.2, 0.3, None]) is None
