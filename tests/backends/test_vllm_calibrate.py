"""``guardrail calibrate --base-url --model`` against a real vLLM server serving the reference model: the artifact
is fitted on the served model's black-box signals, bound to its id, and a guard over the server built with it
(``GuardrailChatModel``'s ``remote_guard``) measures with the estimator it records and answers; another model id is
refused with a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrail import ArtifactError
from guardrail.calibration.artifact import load_artifact, served_model_fingerprint
from guardrail.cli import _register, app
from guardrail.data.labelled import easyvqa_items
from guardrail.integrations._chat_guard import remote_guard
from guardrail.reference import reference_model_path
from tests.support.vllm import VllmServer, served

pytestmark = pytest.mark.vllm
runner = CliRunner()
_register()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    with served(reference_model_path(), tmp_path_factory.mktemp("vllm")) as running:
        yield running


def test_calibrate_a_served_model_and_guard_it(server: VllmServer, tmp_path: Path) -> None:
    out = tmp_path / "served.json"
    result = runner.invoke(
        app,
        ["calibrate", "--base-url", server.base_url, "--model", server.model, "--limit", "60", "--draws", "2",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    artifact = load_artifact(out, expected_model_fingerprint=served_model_fingerprint(server.model))
    assert artifact.served_model == server.model
    assert artifact.info["served"] == {"model": server.model, "base_url": server.base_url}
    setting = artifact.blackbox_setting
    assert setting is not None
    assert (setting.draws, setting.logprobs) == (2, True)
    assert (setting.perturbation, setting.agreement) == ("stability", "percept")
    assert set(artifact.metrics) >= {"visual", "overall"}

    guard = remote_guard(
        model=server.model, base_url=server.base_url, api_key=None, artifact=out, policy="default",
        estimator=None, timeout=None, max_retries=0,
    )  # fmt: skip
    item = easyvqa_items("test", limit=1, seed=0)[0]
    guarded = guard.run(item.request)
    signals = guarded.attempts[0].signals
    assert signals is not None
    assert signals.sources["visual"] == ("visual_agreement", "vision_min_prob")  # percept agreement and token prob
    assert signals.features["visual_agreement"] == signals.features["percept_agreement"]
    assert signals.features["visual_requeries"] == 2.0
    assert signals.sources["reasoning"] == ("reasoning_mean_prob",)

    with pytest.raises(ArtifactError, match=r"fitted on the served model 'guardrail-reference-llava', not 'gpt-4o'"):
        remote_guard(
            model="gpt-4o", base_url=server.base_url, api_key=None, artifact=out, policy="default",
            estimator=None, timeout=None, max_retries=0,
        )  # fmt: skip
