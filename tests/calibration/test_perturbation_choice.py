"""Choosing the visual probe on calibration rows: the rule on its own, then on the shipped reference model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from guardrail.calibration.collect import ScoredItem, remeasure, score_items, scored_arrays
from guardrail.calibration.metrics import auroc
from guardrail.calibration.perturbation_choice import (
    CANDIDATES,
    GROUNDING_WEIGHTS,
    PAPER_DEFAULT,
    ProbeSetting,
    best_setting,
    choose_perturbation,
    reweigh,
)
from guardrail.data.labelled import easyvqa_items
from tests.support.calibration import labelled_row
from tests.support.model_outputs import assert_same_model_output


def test_the_highest_score_wins_and_the_earliest_wins_ties() -> None:
    labels = [c.label for c in CANDIDATES]
    assert labels[0] == "blackout(p=0.8)"  # the paper's default comes first
    assert best_setting(dict.fromkeys(labels, 0.7), CANDIDATES) == PAPER_DEFAULT
    scores: dict[str, float | None] = {**dict.fromkeys(labels, 0.7), "grey": 0.71}
    assert best_setting(scores, CANDIDATES) == ProbeSetting(perturbation="grey")
    assert best_setting({**scores, "grey": None, "noise": float("nan")}, CANDIDATES) == PAPER_DEFAULT
    assert best_setting(dict.fromkeys(labels), CANDIDATES) is None


class _Untouchable:
    """A backend that must not be used: the choice is made without re-scoring."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"backend.{name} used")


def _row(perception_correct: bool | None) -> ScoredItem:
    return labelled_row(perception_correct)


def test_too_few_perception_labels_keep_the_paper_default_without_rescoring() -> None:
    rows = [_row(True)] * 50 + [_row(False)] * 5 + [_row(None)] * 100
    choice = choose_perturbation(_Untouchable(), rows, min_per_class=20)
    assert choice.chosen == PAPER_DEFAULT
    assert choice.n == 55
    assert "55 rows with a perception label, 5 of them wrong" in choice.reason
    assert choice.auroc == {}


def test_the_recorded_setting_round_trips() -> None:
    for setting in CANDIDATES:
        for weight in GROUNDING_WEIGHTS:
            assert ProbeSetting.from_info(setting.weighted(weight).as_info()) == setting.weighted(weight)
    assert ProbeSetting.from_info({}) == PAPER_DEFAULT  # artifacts written before the weight: the paper's w = 1
    assert ProbeSetting.from_info({"perturbation": "grey"}).grounding_weight == 1.0
    assert ProbeSetting(perturbation="grey", grounding_weight=0.1).label == "grey w=0.1"
    assert PAPER_DEFAULT.label == "blackout(p=0.8)"


def test_an_estimator_refuses_a_normalisation_of_another_weight() -> None:
    from guardrail.confidence.normalization import VisualNormalization

    setting = PAPER_DEFAULT.weighted(0.25)
    assert setting.estimator().normalization.grounding_weight == 0.25
    with pytest.raises(
        ValueError, match=r"grounding weight 1 and stability weight 0, the probe setting has 0\.25 and 0"
    ):
        setting.estimator(normalization=VisualNormalization(mean=1.0, std=2.0))


def test_reweighing_equals_measuring_with_the_weight(reference_rows: tuple[Any, list[ScoredItem]]) -> None:
    """s re-weighed from the recorded KL and H is what a probe of that weight measures on the same answers."""
    backend, rows = reference_rows
    few = rows[:12]
    for weight in (0.0, 0.1, 0.5):
        again = remeasure(backend, PAPER_DEFAULT.weighted(weight).estimator(), few)
        for direct, reweighed in zip(again, reweigh(few, weight), strict=True):
            assert direct.signals is not None
            assert reweighed.signals is not None
            # the recorded floats against a second scoring pass: within the model-output tolerance
            assert_same_model_output(
                (reweighed.signals.features["visual_score"], reweighed.signals.visual),
                (direct.signals.features["visual_score"], direct.signals.visual),
                name=f"weight {weight} (visual_score, visual)",
            )


def test_labels_and_candidates_are_validated() -> None:
    with pytest.raises(ValueError, match="`candidates` must name at least one"):
        choose_perturbation(_Untouchable(), [], candidates=())


@pytest.fixture(scope="module")
def reference_rows() -> tuple[Any, list[ScoredItem]]:
    from guardrail.backends.transformers import TransformersBackend
    from guardrail.pretrained import default_model_path

    backend = TransformersBackend.from_pretrained(default_model_path())
    items = easyvqa_items("calibration", limit=160, seed=3)
    return backend, score_items(backend, PAPER_DEFAULT.estimator(), items)


def test_on_the_reference_model_the_choice_is_the_best_ranked_candidate(
    reference_rows: tuple[Any, list[ScoredItem]],
) -> None:
    backend, rows = reference_rows
    choice = choose_perturbation(backend, rows, min_per_class=10)
    assert set(choice.auroc) == {c.weighted(w).label for c in CANDIDATES for w in GROUNDING_WEIGHTS}
    values = {k: v for k, v in choice.auroc.items() if v is not None}
    assert len(values) == len(CANDIDATES) * len(GROUNDING_WEIGHTS)
    assert choice.auroc[choice.chosen.label] == max(values.values())
    assert choice.n == sum(r.perception_correct is not None for r in rows)
    # the table is what re-measuring with the chosen setting gives on the same rows
    again = scored_arrays(remeasure(backend, choice.chosen.estimator(), rows))
    keep = ~np.isnan(again["visual"]) & ~np.isnan(again["perception_correct"])
    assert auroc(again["visual"][keep], again["perception_correct"][keep]) == pytest.approx(
        choice.auroc[choice.chosen.label], abs=1e-9
    )
    # the rows were scored with the paper's probe: naming it reuses those signals, and the table is the same
    assert choose_perturbation(backend, rows, min_per_class=10, measured_with=PAPER_DEFAULT).auroc == choice.auroc
    info = choice.as_info()
    assert info["chosen"] == choice.chosen.label
    assert "calibration rows" in info["reason"]
