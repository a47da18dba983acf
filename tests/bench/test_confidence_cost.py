"""The confidence-cost benchmarks run end to end on tiny models (CPU) and write the documented JSON (slow).

``bench/confidence_cost.py`` runs on a tiny random LLaVA folder; ``bench/gpu_confidence_cost.py --tiny`` times the
library (TransformersBackend + DecoupledEstimator) on a tiny Qwen2.5-VL config (its full-size run needs a GPU).
Timings on this shared machine are not checked against the goals, only for being finite and sane.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from tests.support.bench import load_bench

pytestmark = pytest.mark.slow


def _assert_provenance(summary: dict[str, Any], script: str, argv: list[str]) -> None:
    assert len(summary["commit"]) == 40
    assert isinstance(summary["dirty"], bool)
    assert summary["command"].endswith(" ".join([f"bench/{script}", *argv]))
    assert summary["date"]


def _finite_positive(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_vlms import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("models") / "tiny_llava", max_new_tokens=8)


def test_cpu_benchmark_writes_ratios(tiny_llava_dir: Path, tmp_path: Path) -> None:
    bench = load_bench("confidence_cost")
    out = tmp_path / "confidence_cost.json"
    argv = ["--model", str(tiny_llava_dir), "--items", "2", "--rounds", "2", "--out", str(out)]
    returned = bench.main(argv)
    summary = json.loads(out.read_text())
    assert summary == json.loads(json.dumps(returned))
    _assert_provenance(summary, "confidence_cost.py", argv)
    assert summary["model"] == "tiny_llava"
    assert summary["device"] == "cpu"
    assert summary["items"] == 2
    assert summary["rounds"] == 2
    stability = {"S=0", "S=2", "S=4", "S=8"}
    assert set(summary["variants"]) == {"generate", "K=1", "K=4", "generate, nothing kept", *stability}
    for label, values in summary["variants"].items():
        assert values["calls"] == 4
        assert _finite_positive(values["median_s"])
        assert _finite_positive(values["generate_median_s"])
        assert math.isfinite(values["estimate_median_s"])
        assert (values["estimate_median_s"] > 0) == label.startswith(("K=", "S="))
        assert 0 <= values["score_median_s"] <= values["estimate_median_s"]
    # Row 0 comes from generation: the score pass runs the K perturbed copies (and the S views) alone.
    assert summary["variants"]["K=1"]["score_rows_median"] == 1
    assert summary["variants"]["K=4"]["score_rows_median"] == 4
    for count in (0, 2, 4, 8):
        assert summary["variants"][f"S={count}"]["score_rows_median"] == 1 + count
    for key in ("ratio", "ratio_cpu", "ratio_of_medians"):
        assert set(summary[key]) == {"K=1", "K=4", *stability}
        assert all(math.isfinite(r) and r > 1.0 for r in summary[key].values()), summary[key]
    assert set(summary["ratio_vs_generate_alone"]) == {"generate", "K=1", "K=4", *stability}
    assert all(math.isfinite(r) and r > 0 for r in summary["ratio_vs_generate_alone"].values())
    assert summary["goal_k1"] == 1.15
    assert summary["goal_met"] == (summary["ratio"]["K=1"] <= 1.15)
    assert 1 <= summary["answer_tokens_median"] <= 8


def test_gpu_benchmark_code_path_on_cpu(tmp_path: Path) -> None:
    """The GPU benchmark times the library itself (TransformersBackend + DecoupledEstimator) on a tiny config of
    the same family: the same code path as the full-size run, in seconds."""
    bench = load_bench("gpu_confidence_cost")
    out = tmp_path / "gpu_confidence_cost.json"
    argv = ["--tiny", "--answer-tokens", "6", "--rounds", "2", "--out", str(out)]
    returned = bench.main(argv)
    summary = json.loads(out.read_text())
    assert summary == json.loads(json.dumps(returned))
    _assert_provenance(summary, "gpu_confidence_cost.py", argv)
    assert summary["device"] == "cpu"
    assert summary["device_name"].startswith("cpu")
    assert summary["answer_tokens"] == 6
    assert summary["goal_k1"] == 1.1
    assert summary["complete"] is True
    assert set(summary["results"]) == {"batch 1", "batch 2"}
    for label, entry in summary["results"].items():
        batch = entry["batch"]
        assert label == f"batch {batch}"
        assert entry["generate_calls_per_round"] == batch
        # The product's path: row 0 kept from generation, the score pass runs the K copies alone.
        assert entry["rows_scored_per_request"] == {"K=1": 1, "K=4": 4}
        assert len(entry["generate_s"]) == len(entry["generate_nothing_kept_s"]) == 2
        assert _finite_positive(entry["generate_median_s"])
        assert _finite_positive(entry["generate_nothing_kept_median_s"])
        for k in ("K=1", "K=4"):
            assert _finite_positive(entry["confidence_median_s"][k])
            assert math.isfinite(entry["ratio"][k])
            assert entry["ratio"][k] > 1.0
            assert _finite_positive(entry["ratio_vs_generate_nothing_kept"][k])
        assert entry["visual_finite"]
        # Row 0 kept from generation is what teacher-forced re-scoring gives (float32 on the CPU), and so are the
        # signals computed from it.
        drift = entry["kept_vs_plain_scoring"]
        assert drift["row0_logprob_max_abs_diff"] < 1e-4
        assert drift["feature_max_abs_diff"] < 1e-4
        assert drift["visual_abs_diff"] < 1e-6


def test_gpu_benchmark_processor_covers_the_vocabulary() -> None:
    """Every id of the full-size model decodes to one word and the special tokens sit at Qwen's ids."""
    bench = load_bench("gpu_confidence_cost")
    tokenizer = bench.processor_for(bench.QWEN2_5_VL_3B).tokenizer
    tokens = bench.QWEN2_5_VL_3B["tokens"]
    assert len(tokenizer) == bench.QWEN2_5_VL_3B["text"]["vocab_size"]
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == tokens["image_token_id"]
    assert tokenizer.eos_token_id == tokens["eos_token_id"]
    assert tokenizer.decode([17, 151935]) == "w17 w151935"
    assert tokenizer("w5 w151000", add_special_tokens=False)["input_ids"] == [5, 151000]


def test_full_size_config_is_qwen2_5_vl_3b() -> None:
    """The written-down numbers give the 3.75 B-parameter architecture (built on the meta device: no memory)."""
    import torch

    bench = load_bench("gpu_confidence_cost")
    model = bench.build_model(bench.QWEN2_5_VL_3B, torch.device("meta"), torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    assert 3.70e9 < parameters < 3.80e9
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight  # tied, as in the checkpoint
