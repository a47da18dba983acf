"""``guardrail escalations list / resolve``: output and exit codes, through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrail.cli import _register, app
from guardrail.integrations import open_saver
from tests.support.graphs import build_graph
from tests.support.integration import image_message

GRAPH = "tests.support.graphs:build_graph"


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "checkpoints.sqlite"
    with open_saver(path, must_exist=False) as saver:
        graph = build_graph(saver)
        graph.invoke({"messages": [image_message()]}, {"configurable": {"thread_id": "t-7"}})
    return str(path)


def invoke(*args: str) -> tuple[int, str, str]:
    _register()
    result = CliRunner().invoke(app, ["escalations", *args])
    return result.exit_code, result.stdout, result.stderr


def test_list_shows_question_candidate_confidences_and_thread(db: str) -> None:
    code, out, _ = invoke("list", "--db", db)
    assert code == 0
    assert out.splitlines() == [
        "thread t-7",
        "  question:   What colour is the shape?",
        "  candidate:  green",
        "  confidence: visual 0.20, reasoning 0.20, overall 0.20, familiarity unknown",
        "  reason:     both visual and reasoning confidence are low",
    ]


def test_list_as_json_lines(db: str) -> None:
    code, out, _ = invoke("list", "--db", db, "--json")
    assert code == 0
    item = json.loads(out)
    assert item["thread_id"] == "t-7"
    assert item["candidate_answer"] == "green"


@pytest.mark.parametrize(
    ("flags", "final"),
    [
        (["--approve"], "final message: green"),
        (["--edit", "olive"], "final message: olive"),
        (["--answer", "teal"], "final message: teal"),
        (["--reject", "--reason", "blurred"], "rejected the answer to this question: blurred"),
    ],
)
def test_resolve_resumes_the_thread_with_the_decision(db: str, flags: list[str], final: str) -> None:
    code, out, err = invoke("resolve", "t-7", "--db", db, *flags, "--graph", GRAPH)
    assert code == 0, err
    assert final in out
    code, out, _ = invoke("list", "--db", db)
    assert out.strip() == "no pending escalations"


def test_resolve_exit_codes(db: str, tmp_path: Path) -> None:
    code, _, err = invoke("resolve", "t-7", "--db", db, "--graph", GRAPH)
    assert (code, err.strip()) == (
        2,
        "error: give exactly one of --approve, --edit TEXT, --answer TEXT, --reject (got none)",
    )
    code, _, err = invoke("resolve", "t-7", "--db", db, "--approve", "--reject", "--graph", GRAPH)
    assert code == 2
    assert "(got ['--approve', '--reject'])" in err
    code, _, err = invoke("resolve", "nobody", "--db", db, "--approve", "--graph", GRAPH)
    assert (code, err.strip()) == (1, "error: thread 'nobody' has no pending guardrail escalation")
    code, _, err = invoke("resolve", "t-7", "--db", db, "--approve", "--graph", "nowhere:f")
    assert code == 2
    assert "cannot import graph factory module 'nowhere'" in err
    code, _, err = invoke("list", "--db", str(tmp_path / "none.sqlite"))
    assert code == 2
    assert "does not exist" in err


def test_confidences_show_familiarity_even_when_tiny_or_missing_from_an_older_payload() -> None:
    from guardrail.cli.escalations import _confidences

    values = {"visual": 0.2, "reasoning": 0.25, "overall": 0.222, "familiarity": 0.0031}
    assert _confidences(values) == "visual 0.20, reasoning 0.25, overall 0.22, familiarity 0.0031"
    older = {"visual": 0.2, "reasoning": 0.2, "overall": 0.2}  # saved before familiarity existed
    assert _confidences(older) == "visual 0.20, reasoning 0.20, overall 0.20, familiarity unknown"
    assert _confidences({}) == "visual unknown, reasoning unknown, overall unknown, familiarity unknown"
