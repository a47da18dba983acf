"""``pip install`` of the checkout, no extras, into a fresh environment: no torch, a guarded call through a server.

Builds the environment with ``bench/light_install.py`` (pip downloads from its index, PyPI by default: a few
minutes) and checks what it records. The issue's targets are 150 MB added and ``import guardrail`` within 1 s:

- import time: the median over runs of the import's CPU time is held to 1 s. Its wall-clock time is recorded
  beside it but not held: on a shared machine it counts the neighbours' load (2 cores at load 6 here: 1.2 s wall
  for 0.5 s of CPU);
- size: **the 150 MB target is not met** and not asserted. The light install adds about 250 MB on disk (217 MB of
  files): NumPy 75, openai 30, zstandard 24 (langsmith's, under langchain-core), Pillow 22, langsmith 11, the
  package 11 (its two shipped reference models 7), Pygments 10 (rich's). NumPy, Pillow and openai alone are
  127 MB. Held here is a regression budget of 300 MB, against the 2 GB and more that torch, transformers, SciPy,
  scikit-learn and Matplotlib added before (the CPU build of torch alone is about 700 MB).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bench import load_bench

pytestmark = pytest.mark.slow

SIZE_BUDGET_MB = 300.0
"""A regression budget (module docstring): the issue's target of 150 MB is not met."""


def test_a_fresh_install_without_extras_guards_a_call_through_a_server(tmp_path: Path) -> None:
    out = tmp_path / "light_install.json"
    assert load_bench("light_install").main(["--runs", "5", "--out", str(out), "--work", str(tmp_path / "w")]) == 0
    record = json.loads(out.read_text())
    assert len(record["commit"]) == 40
    assert record["command"].endswith(
        "bench/light_install.py --runs 5 --out " + str(out) + " --work " + str(tmp_path / "w")
    )
    install, check = record["install"], record["check"]
    assert all(install["absent"].values()), install["absent"]
    assert check["guardrail_file"] == "guardrail/__init__.py"  # the installed copy, not the checkout
    assert check["blocked_loaded"] == []
    assert check["blocked_attempts"] == []  # not even tried: nothing of the path imports them optionally
    for mode, sources in (
        ("no_scoring", ["visual_agreement", "vision_min_prob"]),  # percept agreement and its token probability
        ("ok", ["vision_kl", "vision_surprisal", "visual_score"]),
    ):
        call = check["guarded_calls"][mode]
        assert (call["status"], call["answer"], call["visual_sources"]) == ("accepted", "red", sources)
    assert "pip install 'lvlm-guardrail[local]'" in check["hints"]["TransformersBackend"]
    assert "pip install 'lvlm-guardrail[calibrate]'" in check["hints"]["fit"]
    assert 0 < install["added_mb_disk"] <= SIZE_BUDGET_MB
    assert record["import_guardrail"]["median_cpu_s"] <= 1.0
