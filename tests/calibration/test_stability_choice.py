"""Choosing the stability probe on calibration rows: the rule on its own, then on the shipped reference model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from guardrail.calibration.collect import ScoredItem, remeasure, score_items
from guardrail.calibration.perturbation_choice import ProbeSetting
from guardrail.calibration.stability_choice import (
    STABILITY_COUNTS,
    STABILITY_WEIGHTS,
    _mean_group_auroc,
    choose_stability,
    row_group,
)
from guardrail.confidence.stability import STABILITY_FAMILIES
from guardrail.data.labelled import easyvqa_items
from guardrail.types import Signals
from tests.support.calibration import labelled_row

PROBED = {"vision_kl": 0.1, "vision_surprisal": 0.2}


class _Untouchable:
    """A scoring backend that must not be used: the choice is refused before any re-scoring."""

    name = "untouchable"
    patch_size = 8

    def generate(self, *args: Any) -> Any:
        raise AssertionError("generate used")

    def model_images(self, *args: Any) -> Any:
        raise AssertionError("model_images used")

    def token_offsets(self, *args: Any) -> Any:
        raise AssertionError("token_offsets used")

    def score(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("score used")


def _row(perception_correct: bool | None, tags: dict[str, Any] | None = None) -> ScoredItem:
    return labelled_row(perception_correct, tags=tags, signals=Signals(features=PROBED))


def test_groups_are_corruption_kinds_with_clean_apart() -> None:
    assert row_group(_row(True, {"corruption": "blur", "severity": 3})) == "blur"
    assert row_group(_row(True, {"corruption": "blur", "severity": 0})) == "clean"
    assert row_group(_row(True)) is None


def test_the_score_is_the_mean_of_the_auroc_within_each_group() -> None:
    values = np.array([0.1, 0.9, 0.2, 0.8, 5.0, 6.0, 7.0])
    labels = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    groups = ["a", "a", "b", "b", "c", "c", "c"]
    # a: perfect (1.0); b: reversed (0.0); c: 1 of 2 pairs right (0.0 for (7 vs 5), (7 vs 6)) -> 0.0
    assert _mean_group_auroc(values, labels, groups) == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    # a separation between groups earns nothing: every group ranked perfectly within itself gives 1
    shifted = np.array([0.1, 0.9, 10.1, 10.9])
    assert _mean_group_auroc(shifted, np.array([0.0, 1.0, 0.0, 1.0]), ["a", "a", "b", "b"]) == 1.0
    assert _mean_group_auroc(values[:2], np.array([1.0, 1.0]), ["a", "a"]) is None  # one class: not ranked


def test_too_few_labels_or_a_backend_that_cannot_score_leave_the_probe_off() -> None:
    rows = [_row(True)] * 50 + [_row(False)] * 5 + [_row(None)] * 10
    choice = choose_stability(_Untouchable(), rows, grounding_weight=0.1, min_per_class=20)
    assert choice.chosen.count == 0
    assert "55 rows with a perception label, 5 of them wrong" in choice.reason
    blind = choose_stability(object(), rows, grounding_weight=0.1)  # type: ignore[arg-type]
    assert blind.chosen.count == 0
    assert "cannot re-score" in blind.reason


@pytest.fixture(scope="module")
def reference_rows() -> tuple[Any, list[ScoredItem], ProbeSetting]:
    from guardrail.backends.transformers import TransformersBackend
    from guardrail.pretrained import default_model_path

    backend = TransformersBackend.from_pretrained(default_model_path())
    probe = ProbeSetting(perturbation="blackout", blackout_probability=1.0, grounding_weight=0.1)
    items = easyvqa_items("calibration", limit=120, seed=7)
    return backend, score_items(backend, probe.estimator(), items), probe


@pytest.mark.slow
def test_on_the_reference_model_the_table_is_what_the_estimator_measures(
    reference_rows: tuple[Any, list[ScoredItem], ProbeSetting],
) -> None:
    backend, rows, probe = reference_rows
    choice = choose_stability(backend, rows, grounding_weight=probe.grounding_weight, min_per_class=10)
    expected = {f"{f} x{k} l={w:g}" for f in STABILITY_FAMILIES for k in STABILITY_COUNTS for w in STABILITY_WEIGHTS}
    assert set(choice.scores) == expected
    assert choice.baseline is not None
    values = [v for v in choice.scores.values() if v is not None]
    if choice.chosen.count:
        value = choice.scores[f"{choice.chosen.label} l={choice.weight:g}"]
        assert value is not None
        assert value >= max(values) - 0.002
        assert value >= choice.baseline + 0.002
    # every table entry is what an estimator of that setting measures on the same answers (mixed composed from
    # the families' views, a smaller count the first views): checked on two entries
    for label, family, count, weight in (("mixed x4 l=2", "mixed", 4, 2.0), ("geometric x2 l=8", "geometric", 2, 8.0)):
        from guardrail.confidence.stability import StabilitySetting

        setting = probe.with_stability(StabilitySetting(family=family, count=count), weight)
        again = [r for r in remeasure(backend, setting.estimator(), rows) if r.perception_correct is not None]
        statistic = np.array([r.signals.features["visual_score"] if r.signals else np.nan for r in again])
        labels = np.array([float(bool(r.perception_correct)) for r in again])
        measured = _mean_group_auroc(statistic, labels, [row_group(r) for r in again])
        assert measured == pytest.approx(choice.scores[label], abs=0.01), label
    info = choice.as_info()
    assert info["chosen"] == choice.chosen.label
    assert info["groups"] == len({row_group(r) for r in rows if r.perception_correct is not None})
