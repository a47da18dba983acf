"""The GenAI inference attributes of an attempt span and the token-usage metric, end to end from a chat model's
standard parameters through the guard and the backend's ``Generation`` to the trace."""

from __future__ import annotations

import json

from guardrail import Guard, Request
from guardrail.integrations import GuardrailChatModel
from tests.support.chat import SENTENCE, WordModel
from tests.support.guards import make_policy
from tests.support.integration import image_message
from tests.support.telemetry import Recorded, make_recorded


def test_a_length_cut_is_a_length_finish_reason_from_backend_to_langchain_and_to_the_span(recorded: Recorded) -> None:
    backend = WordModel()
    guard = Guard(backend, estimator=backend, policy=make_policy(), telemetry=recorded.telemetry)
    reply = GuardrailChatModel(guard=guard, max_tokens=3, temperature=0.0, stop=["never"]).invoke([image_message()])
    assert reply.response_metadata["finish_reason"] == "length"
    (attempt,) = recorded.attempt_spans()
    attributes = dict(attempt.attributes or {})
    assert attempt.name == "chat word-model"
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert attributes["gen_ai.request.max_tokens"] == 3
    assert attributes["gen_ai.request.temperature"] == 0.0
    assert "gen_ai.request.seed" not in attributes  # this backend generated without one
    assert attributes["gen_ai.request.stop_sequences"] == ("never",)
    assert attributes["gen_ai.output.type"] == "text"
    assert attributes["gen_ai.usage.output_tokens"] == 3


def test_the_token_usage_histogram_has_a_point_per_token_type(recorded: Recorded) -> None:
    backend = WordModel()
    guard = Guard(backend, estimator=backend, policy=make_policy(), telemetry=recorded.telemetry)
    guard.run(Request.from_question("What colour is it?"))
    points = {p.attributes["gen_ai.token.type"]: p for p in recorded.metrics()["gen_ai.client.token.usage"]}
    assert set(points) == {"input", "output"}
    assert points["output"].sum == len(SENTENCE.split(" "))
    assert points["input"].sum == 4
    for point in points.values():
        assert point.attributes["gen_ai.operation.name"] == "chat"
        assert point.attributes["gen_ai.provider.name"] == "word"
        assert point.attributes["gen_ai.request.model"] == "word-model"
        assert list(point.explicit_bounds)[:3] == [1, 4, 16]


def test_output_messages_carry_the_real_finish_reason() -> None:
    rec = make_recorded(capture_content=True)
    backend = WordModel()
    guard = Guard(backend, estimator=backend, policy=make_policy(), telemetry=rec.telemetry)
    GuardrailChatModel(guard=guard, max_tokens=2).invoke([image_message()])
    (output,) = json.loads(str(dict(rec.attempt_spans()[0].attributes or {})["gen_ai.output.messages"]))
    assert output["finish_reason"] == "length"
    rec.tracer_provider.shutdown()
    rec.meter_provider.shutdown()
