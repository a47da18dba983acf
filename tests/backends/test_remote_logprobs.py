"""Token records from a server: read strictly, and aligned with the text the server returned."""

from __future__ import annotations

import pytest

from guardrail import AgreementEstimator, Generation, Request
from guardrail.backends._remote import parse_logprobs
from guardrail.errors import BackendError


def _records(*pairs: tuple[str, float]) -> dict[str, list[dict[str, object]]]:
    return {"content": [{"token": t, "logprob": lp, "top_logprobs": []} for t, lp in pairs]}


def test_tokens_that_spell_the_text_are_kept_as_they_are() -> None:
    records = _records(("red", -0.1), (" circle", -0.2))
    assert parse_logprobs(records, text="red circle") == (("red", " circle"), (-0.1, -0.2))
    assert parse_logprobs(records) == (("red", " circle"), (-0.1, -0.2))


def test_a_stop_token_the_server_left_out_of_the_text_is_dropped() -> None:
    """vLLM returns ``</s>`` as the last record but strips it from the message text."""
    records = _records(("\\boxed{", -0.1), ("red", -0.2), ("}", -0.05), ("</s>", -0.01))
    tokens, logprobs = parse_logprobs(records, text="\\boxed{red}")
    assert tokens == ("\\boxed{", "red", "}")
    assert logprobs == (-0.1, -0.2, -0.05)


def test_records_that_do_not_spell_the_text_stay_whole() -> None:
    """Nothing is guessed: tokens that are not the text plus a tail are kept, and the estimator says so."""
    records = _records(("blue", -0.1), ("</s>", -0.2))
    assert parse_logprobs(records, text="red") == (("blue", "</s>"), (-0.1, -0.2))
    records = _records(("re", -0.1), ("dd", -0.2))  # the text ends inside a token: no clean cut
    assert parse_logprobs(records, text="red") == (("re", "dd"), (-0.1, -0.2))


def test_with_the_stop_token_dropped_the_spans_are_found() -> None:
    text = "<vision>red circle</vision><reasoning>so red</reasoning> \\boxed{red}"
    records = _records(*((c, -0.1) for c in text), ("</s>", -0.01))
    tokens, logprobs = parse_logprobs(records, text=text)
    generation = Generation(text=text, tokens=tokens, token_logprobs=logprobs)
    signals = AgreementEstimator(draws=1).estimate(_NoImages(), Request.from_question("what colour?"), generation)
    assert not any("not matching the text" in p for p in signals.problems)
    assert signals.features["answer_tokens"] == len("red")


def test_malformed_records_are_refused() -> None:
    with pytest.raises(BackendError, match="record 0 lacks a string token"):
        parse_logprobs({"content": [{"token": 3, "logprob": -0.1}]}, text="x")


class _NoImages:
    name = "server"

    def generate(self, request: Request, options: object) -> Generation:
        raise AssertionError("no re-query without images")
