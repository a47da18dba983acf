"""Every results file in ``bench/results`` says which commit and which command produced it (``bench/_provenance.py``),
so that a figure quoted in docs/figures.md can be traced to the code that measured it and measured again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_a_results_file_records_its_commit_and_command(path: Path) -> None:
    results = json.loads(path.read_text())
    assert isinstance(results.get("commit"), str)
    assert len(results["commit"]) == 40, "a full commit hash"
    assert isinstance(results.get("dirty"), bool)
    assert " bench/" in results.get("command", ""), "the command that ran the benchmark"
    assert results.get("date")
