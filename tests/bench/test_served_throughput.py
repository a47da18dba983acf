"""The served-throughput benchmark end to end on a real vLLM server, on a few questions (``make test-vllm``).

Timings on this shared machine are not checked against any goal, only for being finite and consistent: the ratio
is the two rates' quotient, a plain call is one server request, a guarded attempt is its generation and one
scoring request per copy the artifact's probe scores (its perturbed copies and stability views: row 0 comes from the
generation), one more with the original image scored too, and no guarded call fails.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from guardrail.pretrained import ARTIFACT_FILENAME
from guardrail.reference import reference_model_path
from tests.support.bench import load_bench
from tests.support.vllm import require_vllm

pytestmark = pytest.mark.vllm


def test_the_benchmark_writes_ratios_through_a_real_server(tmp_path: Path) -> None:
    require_vllm()
    out = tmp_path / "served_throughput.json"
    argv = ["--items", "6", "--rounds", "1", "--concurrency", "1", "4", "--with-scored-original", "--out", str(out)]
    assert load_bench("served_throughput").main(argv) == 0
    record = json.loads(out.read_text())
    assert record["command"].endswith(" ".join(["bench/served_throughput.py", *argv]))
    assert len(record["commit"]) == 40
    assert record["failures"] == []
    assert record["server"]["startup_seconds"] > 0
    assert record["server"]["rss_gib"] > 0
    assert set(record["by_concurrency"]) == {"1", "4"}
    settings = json.loads((reference_model_path() / ARTIFACT_FILENAME).read_text())["info"]["estimator"]
    copies = settings["draws"] + settings["stability"]["count"]  # 1 + 8 for the shipped artifact
    for row in record["by_concurrency"].values():
        for key in ("unguarded_calls_per_s", "guarded_calls_per_s", "ratio_guarded_to_unguarded"):
            assert math.isfinite(row[key])
            assert row[key] > 0
        assert row["ratio_guarded_to_unguarded"] == pytest.approx(
            row["guarded_calls_per_s"] / row["unguarded_calls_per_s"]
        )
        assert row["server_requests_per_unguarded_call"] == 1.0
        attempts, before = row["attempts_per_guarded_call"], row["attempts_per_guarded_scored_original_call"]
        assert attempts >= 1.0
        assert row["server_requests_per_guarded_call"] == pytest.approx(attempts * (1 + copies))
        assert row["server_requests_per_guarded_scored_original_call"] == pytest.approx(before * (2 + copies))
        for mode in ("unguarded", "guarded", "guarded_scored_original"):
            assert row[f"server_cpu_seconds_per_{mode}_call"] > 0
            assert row[f"client_cpu_seconds_per_{mode}_call"] > 0
