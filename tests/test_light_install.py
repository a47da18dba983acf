"""The light install (``pip install lvlm-guardrail``, no extras) serves the remote and black-box path without torch.

``bench/_light_check.py`` runs in a fresh interpreter with torch, transformers, safetensors, SciPy, scikit-learn,
Matplotlib and easy-vqa refused by a ``sys.meta_path`` finder (installed here, so refusing them is what proves the
point): ``import guardrail`` and every remote, black-box, policy, calibration, integration, telemetry and CLI module
import; two guarded calls through ``OpenAICompatibleBackend`` and ``AgreementEstimator`` against a fake
OpenAI-compatible server succeed (answer agreement, and the server-scored KL); the shipped artifact applies with the
numbers it gives here; what needs an extra names it. The same script runs in a really fresh environment in
``tests/bench/test_light_install.py`` (slow).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardrail import Signals, load_artifact
from guardrail._extras import install_hint, missing, needs, require
from guardrail.reference import reference_model_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check() -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script, server = ROOT / "bench" / "_light_check.py", ROOT / "tests" / "support" / "fake_openai_server.py"
    command = [sys.executable, str(script), str(server)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record: dict[str, object] = json.loads(done.stdout)
    return record


def test_the_remote_path_imports_nothing_heavy(check: dict[str, object]) -> None:
    assert Path(str(check["guardrail_file"])).resolve() == ROOT / "guardrail" / "__init__.py"
    assert check["blocked_loaded"] == []
    assert check["blocked_attempts"] == []  # not even an optional `try: import torch` on the way


def test_guarded_calls_through_a_server_work_without_torch(check: dict[str, object]) -> None:
    calls = check["guarded_calls"]
    assert isinstance(calls, dict)
    agreement, scored = calls["no_scoring"], calls["ok"]
    assert (agreement["status"], agreement["answer"]) == ("accepted", "red")
    # percept agreement under the re-queries (the fake says the same under every view) and the percept's least token
    # probability (the fake's log-probs are all -0.1)
    assert agreement["visual_sources"] == ["visual_agreement", "vision_min_prob"]
    assert agreement["visual"] == pytest.approx((1.0 + math.exp(-0.1)) / 2, abs=1e-9)
    assert agreement["server_requests"] == 1 + 2 + 1  # the answer, two re-queries, one refused scoring request
    assert (scored["status"], scored["answer"]) == ("accepted", "red")
    assert scored["visual_sources"] == ["vision_kl", "vision_surprisal", "visual_score"]
    assert 0.0 < scored["visual"] < 1.0
    assert scored["reasoning"] == pytest.approx(0.9048374180359594, abs=1e-12)  # exp(-0.1): the fake's log-probs


def test_the_artifact_applies_with_the_same_numbers(check: dict[str, object]) -> None:
    artifact = load_artifact(reference_model_path() / "guardrail_calibration.json")
    here = artifact.decoupled_calibrator().calibrate(Signals(visual=0.7, reasoning=0.6, holistic=0.65))
    there = check["artifact_confidence"]
    assert isinstance(there, dict)
    for name in ("visual", "reasoning", "overall"):
        assert there[name] == pytest.approx(getattr(here, name), abs=1e-12)


def test_what_needs_an_extra_names_it(check: dict[str, object]) -> None:
    hints = check["hints"]
    assert isinstance(hints, dict)
    assert hints["TransformersBackend"] == (
        "TransformersBackend (a model in process) needs the `local` extra: pip install 'lvlm-guardrail[local]'"
        " ('torch' is not installed)"
    )
    assert hints["fit"] == (
        "fitting PlattScaling needs the `calibrate` extra: pip install 'lvlm-guardrail[calibrate]'"
        " ('scipy' is not installed)"
    )


def test_install_hint_is_pinned() -> None:
    assert install_hint("calibrate", "fitting a calibrator") == (
        "fitting a calibrator needs the `calibrate` extra: pip install 'lvlm-guardrail[calibrate]'"
    )
    with pytest.raises(ValueError, match=r"`extra` must be one of \['calibrate', 'local'\], got 'gpu'"):
        install_hint("gpu", "x")  # type: ignore[arg-type]


def test_a_missing_extra_module_is_named_and_others_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # importing it raises ModuleNotFoundError
    with pytest.raises(ImportError, match=r"needs the `calibrate` extra") as caught:
        require("scipy.optimize", extra="calibrate", feature="fitting")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    unrelated = ModuleNotFoundError("No module named 'left_pad'", name="left_pad")
    assert missing(unrelated, "local", "x") is unrelated
    with pytest.raises(ModuleNotFoundError, match="left_pad"), needs("local", "x"):
        raise unrelated
