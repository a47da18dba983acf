"""The shift benchmark on the shipped reference model, asserted loosely on a smaller sample (slow).

``bench/shift.py`` with its defaults gives the figures quoted in docs/figures.md; here fewer items check the same
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
    reworded = shift["reworded"]
    assert reworded["guarded"]["wrong_accepted_share"] <= 0.05, reworded["guarded"]
    # the gain is measured against the same fit without the shift handling, which accepts most of them wrong
    assert reworded["without_shift"]["first_answer_wrong_accepted_share"] >= 0.3, reworded["without_shift"]
    assert reworded["shipped"]["unfamiliar_below_0.01"] >= 0.9, reworded["shipped"]


def test_leaving_a_corruption_family_out_keeps_overall_roughly_calibrated(shift: dict[str, Any]) -> None:
    folds = [f["with_shift"] for f in shift["leave_one_family_out"].values()]
    assert len(folds) == 6
    assert sum(f["overall_ece10"] for f in folds) / 6 <= 0.1, folds
    assert sum(f["visual_auroc_perception"] for f in folds) / 6 >= 0.7, folds


def test_unseen_corruptions_are_rarely_accepted_wrong(shift: dict[str, Any]) -> None:
    assert set(shift["unseen_families"]) == {"shear", "wave", "motion_blur", "overexpose"}
    for family, result in {**shift["heldout_families"], **shift["unseen_families"]}.items():
        assert result["guarded"]["wrong_accepted_share"] <= 0.2, (family, result["guarded"])
        assert result["shipped"]["mean_overall"] <= result["shipped"]["answer_accuracy"] + 0.15, (family, result)


def test_every_set_is_also_measured_under_the_ablations(shift: dict[str, Any]) -> None:
    ablations = {"with_shift", "without_shift", "without_stability", "without_cross_fit"}
    for fold in shift["leave_one_family_out"].values():
        assert set(fold) == ablations
    for result in (*shift["unseen_families"].values(), shift["reworded"], *shift["in_distribution"].values()):
        assert ablations | {"shipped"} <= set(result)
    assert not shift["model"].startswith("/")  # recorded relative to the repository


def test_in_distribution_figures_hold(shift: dict[str, Any]) -> None:
    clean = shift["in_distribution"]["clean"]
    assert clean["guarded"]["coverage"] >= 0.9, clean["guarded"]
    assert clean["shipped"]["unfamiliar_below_0.01"] <= 0.05, clean["shipped"]
    corrupted = shift["in_distribution"]["corrupted"]["shipped"]
    assert corrupted["overall_ece10"] <= 0.08, corrupted


def test_results_record_their_provenance(shift: dict[str, Any]) -> None:
    # The environment variables that change what is measured come first (bench/_provenance.py), then the command.
    assert ".venv/bin/python " in shift["command"]
    assert shift["commit"] is None or len(shift["commit"]) == 40
