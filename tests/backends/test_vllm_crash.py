"""A vLLM server killed in the middle of a guarded call: the call ends in the policy's ``on_error``, nothing is
accepted, and so does every call after it while the server is gone. The server here is this module's own (the
other vLLM tests keep theirs); ``make test-vllm`` runs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from guardrail import Generation, GenerationOptions, Guard, Request
from guardrail.backends.openai import OpenAICompatibleBackend
from guardrail.calibration.artifact import load_artifact
from guardrail.data.easyvqa import load_easyvqa
from guardrail.pretrained import ARTIFACT_FILENAME
from guardrail.reference import reference_model_path
from tests.support.vllm import VllmServer, served, served_estimator

pytestmark = pytest.mark.vllm


class _KilledAfterAnswering(OpenAICompatibleBackend):
    """The served model, whose server is killed once it has answered, before the answer is scored."""

    def __init__(self, server: VllmServer) -> None:
        super().__init__(server.base_url, server.model, timeout=60, max_tokens=64, max_images=1)
        self.server = server

    def generate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        generation = super().generate(request, options)
        self.server.kill()
        return generation


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    with served(reference_model_path(), tmp_path_factory.mktemp("vllm-crash")) as running:
        yield running


def test_a_server_killed_mid_call_ends_in_on_error_with_nothing_accepted(server: VllmServer) -> None:
    artifact = load_artifact(reference_model_path() / ARTIFACT_FILENAME)
    backend = _KilledAfterAnswering(server)
    guard = Guard(
        backend,
        estimator=served_estimator(artifact, patch_size=8),
        calibrator=artifact.decoupled_calibrator(),
        policy="default",
    )
    example = load_easyvqa("test")[0]
    request = Request.from_question(example.question, [example.image()])

    result = guard.run(request)
    assert server.process.poll() is not None  # the server is gone
    assert result.status != "accepted"
    assert result.answer is None
    assert result.final_decision.rule == "on_error"
    assert result.error is not None
    assert result.error.stage == "estimator"  # the answer came back; scoring it reached a dead server
    assert "teacher-forced scoring failed" in result.error.message

    after = Guard(
        OpenAICompatibleBackend(server.base_url, server.model, timeout=10, max_images=1),
        estimator=served_estimator(artifact, patch_size=8),
        calibrator=artifact.decoupled_calibrator(),
        policy="default",
    ).run(request)
    assert after.answer is None
    assert after.final_decision.rule == "on_error"
    assert after.error is not None
    assert after.error.stage == "backend"
