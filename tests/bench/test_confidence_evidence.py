"""The evidence benchmark on the shipped reference model, asserted loosely on a smaller sample (slow).

``bench/confidence_evidence.py --n 1500 --black 150`` gives the figures quoted in docs/figures.md; here 500 corrupted
test questions and 60 blacked-out images check the same claims with room for sampling noise.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from guardrail.calibration.perturbation_choice import ProbeSetting
from guardrail.confidence.stability import StabilitySetting

pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "confidence_evidence.py"


@pytest.fixture(scope="module")
def evidence() -> dict[str, Any]:
    from guardrail.pretrained import default_model_path

    spec = importlib.util.spec_from_file_location("_bench_confidence_evidence", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCH.parent))  # the bench imports its sibling _provenance
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    result: dict[str, Any] = module.run(default_model_path(), 500, 60, 0)
    return result


def test_visual_confidence_ranks_perception_errors_better_than_one_holistic_score(evidence: dict[str, Any]) -> None:
    ranks = evidence["auroc_perception"]
    assert ranks["visual"] >= 0.82, ranks
    assert ranks["visual"] > ranks["holistic_mean_answer_token_prob"] + 0.2, ranks


def test_reasoning_confidence_ranks_reasoning_errors(evidence: dict[str, Any]) -> None:
    ranks = evidence["auroc_reasoning_given_correct_perception"]
    assert ranks["reasoning_errors"] >= 5, ranks
    assert ranks["reasoning"] >= 0.7, ranks


def test_visual_confidence_collapses_when_the_image_is_blacked_out(evidence: dict[str, Any]) -> None:
    black = evidence["blackout"]
    assert black["visual_calibrated_black_mean"] < 0.5 * black["visual_calibrated_clean_mean"], black
    assert evidence["errors"] == 0


def test_the_shipped_probe_is_the_one_chosen_on_the_calibration_split(evidence: dict[str, Any]) -> None:
    probe = evidence["probe"]
    chosen = probe["chosen_on_calibration"]
    assert chosen is not None
    used = ProbeSetting.from_info(probe["used"])
    # the visual probe chosen on the calibration split, whatever stability probe was chosen after it
    assert chosen["chosen"] == used.with_stability(StabilitySetting(), 0.0).label
    assert set(probe["test_auroc_perception_by_candidate"]) == set(chosen["auroc_perception"])
