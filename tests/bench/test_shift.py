"""The shift benchmark on the shipped reference model, asserted loosely on a smaller sample (slow).

``bench/shift.py`` with its defaults gives the figures quoted in the README; here fewer items check the same
claims with room for sampling noise: off the calibration data the guard does not accept wrong answers with
in-distribution confidence, and the shift handling does not cost the in-distribution figures.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def shift() -> dict[str, Any]:
    from guardrail.pretrained import default_model_path

    sys.path.insert(0, str(BENCH))  # the bench imports its sibling _provenance
    try:
        spec = importlib.util.spec_from_file_location("_bench_shift", BENCH / "shift.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        result: dict[str, Any] = module.run(default_model_path(), n_cal=1200, n=60, n_reworded=150, n_clean=120, seed=0)
    finally:
        sys.path.remove(str(BENCH))
    return result


def test_reworded_questions_are_not_accepted_when_wrong(shift: dict[str, Any]) -> None:
    guarded = shift["reworded"]["guarded"]
    assert guarded["wrong_accepted_share"] <= 0.08, guarded
    if guarded["accepted_accuracy"] is not None and guarded["coverage"] >= 0.1:
        assert guarded["accepted_accuracy"] >= 0.85, guarded


def test_leaving_a_corruption_family_out_keeps_overall_calibrated(shift: dict[str, Any]) -> None:
    for family, folds in shift["leave_one_family_out"].items():
        with_shift = folds["with_shift"]
        assert with_shift["overall_ece10"] <= 0.12, (family, with_shift)
        assert with_shift["visual_auroc_perception"] >= 0.7, (family, with_shift)


def test_unseen_corruptions_are_not_reported_with_in_distribution_confidence(shift: dict[str, Any]) -> None:
    for family, result in shift["heldout_families"].items():
        shipped = result["shipped"]
        assert shipped["mean_overall"] <= shipped["answer_accuracy"] + 0.12, (family, shipped)


def test_in_distribution_figures_hold(shift: dict[str, Any]) -> None:
    clean = shift["in_distribution"]["clean"]
    assert clean["guarded"]["coverage"] >= 0.85, clean["guarded"]
    assert clean["shipped"]["unfamiliar_below_0.01"] <= 0.05, clean["shipped"]
    corrupted = shift["in_distribution"]["corrupted"]["shipped"]
    assert corrupted["overall_ece10"] <= 0.06, corrupted


def test_results_record_their_provenance(shift: dict[str, Any]) -> None:
    assert shift["command"].startswith(".venv/bin/python")
    assert shift["commit"] is None or len(shift["commit"]) == 40
