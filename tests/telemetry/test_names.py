"""Every GenAI name guardrail emits is spelled as the conventions spell it (copied from them into
``tests/support/genai_spec.py``), and as the semconv package's (deprecated, private) copies do, while no module
imports those copies."""

from __future__ import annotations

import ast
import importlib
import typing
import warnings
from pathlib import Path

import pytest

import guardrail
from guardrail.telemetry import _names as n
from guardrail.types import FinishReason
from tests.support import genai_spec

GEN_AI = {name: getattr(n, name) for name in n.__all__ if name.startswith("GEN_AI_")}


def test_every_genai_name_is_in_the_conventions() -> None:
    assert GEN_AI, "no GenAI constants found"
    for constant, value in GEN_AI.items():
        assert value in {*genai_spec.ATTRIBUTES, *genai_spec.METRICS, *genai_spec.EVENTS}, (constant, value)


def test_enum_values_and_instruments_are_the_conventions() -> None:
    assert n.CHAT in genai_spec.ENUM_MEMBERS[n.GEN_AI_OPERATION_NAME]
    assert n.OUTPUT_TYPE_TEXT in genai_spec.ENUM_MEMBERS[n.GEN_AI_OUTPUT_TYPE]
    assert {n.TOKEN_TYPE_INPUT, n.TOKEN_TYPE_OUTPUT} == genai_spec.ENUM_MEMBERS[n.GEN_AI_TOKEN_TYPE]
    assert set(typing.get_args(FinishReason)) == genai_spec.FINISH_REASONS
    assert genai_spec.METRICS[n.GEN_AI_CLIENT_TOKEN_USAGE] == ("histogram", "{token}")
    assert genai_spec.METRICS[n.GEN_AI_CLIENT_OPERATION_DURATION] == ("histogram", "s")


def test_the_semconv_packages_copies_agree() -> None:
    """A second, independent source of the same strings (read here only; the library never imports it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            attributes = importlib.import_module("opentelemetry.semconv._incubating.attributes.gen_ai_attributes")
            metrics = importlib.import_module("opentelemetry.semconv._incubating.metrics.gen_ai_metrics")
        except ImportError:
            pytest.skip("this semconv package has no GenAI copies any more")
        for constant, value in GEN_AI.items():
            theirs = getattr(attributes, constant, None) or getattr(metrics, constant, None)
            if theirs is not None:
                assert theirs == value, constant


def test_no_module_imports_the_deprecated_incubating_names() -> None:
    root = Path(guardrail.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert "_incubating" not in node.module, path
