"""The review errors of ``guardrail.integrations`` (its surface is pinned in tests/test_public_api.py)."""

from __future__ import annotations

import guardrail.integrations as integrations


def test_review_errors_are_guardrail_input_errors() -> None:
    from guardrail import GuardrailError, InputError

    assert issubclass(integrations.ReviewError, InputError)
    assert issubclass(integrations.ReviewError, GuardrailError)
