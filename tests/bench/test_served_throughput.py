"""The served-throughput benchmark end to end on a real vLLM server, on a few questions (``make test-vllm``).

Timings on this shared machine are not checked against any goal, only for being finite and consistent: the ratio
is the two rates' quotient, a plain call is one server request and a guarded one at least three (its generation and
the two scoring requests of its first attempt), and no guarded call fails.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.support.bench import load_bench
from tests.support.vllm import require_vllm

pytestmark = pytest.mark.vllm


def test_the_benchmark_writes_ratios_through_a_real_server(tmp_path: Path) -> None:
    require_vllm()
    out = tmp_path / "served_throughput.json"
    argv = ["--items", "6", "--rounds", "1", "--concurrency", "1", "4", "--out", str(out)]
    assert load_bench("served_throughput").main(argv) == 0
    record = json.loads(out.read_text())
    assert record["command"].endswith(" ".join(["bench/served_throughput.py", *argv]))
    assert len(record["commit"]) == 40
    assert record["failures"] == []
    assert record["server"]["startup_seconds"] > 0
    assert record["server"]["rss_gib"] > 0
    assert set(record["by_concurrency"]) == {"1", "4"}
    for row in record["by_concurrency"].values():
        for key in ("unguarded_calls_per_s", "guarded_calls_per_s", "ratio_guarded_to_unguarded"):
            assert math.isfinite(row[key])
            assert row[key] > 0
        assert row["ratio_guarded_to_unguarded"] == pytest.approx(
            row["guarded_calls_per_s"] / row["unguarded_calls_per_s"]
        )
        assert row["server_requests_per_unguarded_call"] == 1.0
        assert row["server_requests_per_guarded_call"] >= 3.0
        assert row["attempts_per_guarded_call"] >= 1.0
