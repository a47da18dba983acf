"""Named policy texts and a helper that loads an invalid one, shared by the policy tests."""

from __future__ import annotations

import textwrap

import pytest

from guardrail.errors import PolicyError
from guardrail.policy import load_policy

VALID = """\
version: 1
name: tiny
rules:
  - when: {visual: {below: 0.5}}
    do: fetch_more_views
    with: {views: 2}
otherwise: accept
"""

ACTIONS = "accept, abstain, re_ask, fetch_more_views, escalate, fallback"
TOP_KEYS = (
    "version, name, description, budget, rules, otherwise, on_exhausted, on_error, accept_uncalibrated, on_uncalibrated"
)


def problems(text: str | bytes) -> list[str]:
    """The formatted problem lines for policy ``text`` (which must be invalid)."""
    if isinstance(text, str):
        text = textwrap.dedent(text)
        text = text if "\n" in text else text + "\n"
    with pytest.raises(PolicyError) as info:
        load_policy(text, source="p.yaml")
    return [p.format() for p in info.value.problems]
