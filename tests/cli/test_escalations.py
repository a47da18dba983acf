"""``guardrail escalations list / resolve``: output and exit codes, through typer's runner."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrail.cli import _register, app
from guardrail.integrations import ImageStore, guardrail_graph, open_saver
from tests.support.graphs import build_graph
from tests.support.integration import escalate_as_before_images, image_message, later_escalation_guard, png_bytes

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


def test_list_shows_question_candidate_confidences_rule_perception_and_image(db: str) -> None:
    code, out, _ = invoke("list", "--db", db)
    assert code == 0
    sha = hashlib.sha256(png_bytes()).hexdigest()
    stored = ImageStore.beside(db).path_for(sha, "image/png")
    assert out.splitlines() == [
        "thread t-7",
        "  question:   What colour is the shape?",
        "  candidate:  green",
        "  confidence: visual 0.20, reasoning 0.20, overall 0.20, familiarity unknown",
        "  reason:     both visual and reasoning confidence are low",
        "  rule:       rules[0] both-low (tested overall 0.20)",
        "  perception: v",
        "  reasoning:  r",
        f"  image:      {stored} (sha256 {sha})",
    ]


def test_list_shows_an_escalation_saved_before_images_and_rules_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    escalate_as_before_images(monkeypatch)
    path = tmp_path / "old.sqlite"
    with open_saver(path, must_exist=False) as saver:
        build_graph(saver).invoke({"messages": [image_message()]}, {"configurable": {"thread_id": "t-1"}})
    code, out, _ = invoke("list", "--db", str(path))
    assert code == 0
    assert out.splitlines() == [
        "thread t-1",
        "  question:   What colour is the shape?",
        "  candidate:  green",
        "  confidence: visual 0.20, reasoning 0.20, overall 0.20, familiarity unknown",
        "  reason:     both visual and reasoning confidence are low",
    ]
    code, out, err = invoke("resolve", "t-1", "--db", str(path), "--approve", "--graph", GRAPH)
    assert (code, out.strip()) == (0, "thread t-1: approve; final message: green"), err


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
    measured = {**values, "stability": 0.61}  # shown once measured
    assert _confidences(measured) == "visual 0.20, reasoning 0.25, overall 0.22, familiarity 0.0031, stability 0.61"


def test_serve_refuses_what_it_cannot_serve(db: str, tmp_path: Path) -> None:
    code, _, err = invoke("serve", "--db", str(tmp_path / "none.sqlite"))
    assert (code, err.startswith("error: checkpoint database")) == (2, True)
    assert "does not exist" in err
    code, _, err = invoke("serve", "--db", db, "--graph", "nowhere:f")
    assert code == 2
    assert "cannot import graph factory module 'nowhere'" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = invoke("serve", "--db", db, "--graph", GRAPH, "--port", str(port))
    assert (code, err.strip()) == (2, f"error: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_a_postgres_server_that_cannot_be_reached_is_exit_2_in_one_line_without_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://agent:s3cret-pw@127.0.0.1:{port}/escalations"
    for args in (["list", "--db", url], ["resolve", "t-1", "--db", url, "--approve", "--graph", GRAPH],
                 ["serve", "--db", url, "--graph", GRAPH]):  # fmt: skip
        code, out, err = invoke(*args)
        assert code == 2, (args, out, err)
        assert err.startswith("error: cannot connect to the PostgreSQL checkpoint database 'postgresql://agent:***@")
        assert err.count("\n") == 1
        assert "s3cret-pw" not in out + err


def test_a_postgres_url_without_the_extra_is_exit_2_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for module in ("guardrail.integrations._postgres", "langgraph.checkpoint.postgres"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    code, _, err = invoke("list", "--db", "postgresql://agent:s3cret-pw@127.0.0.1/escalations")
    assert code == 2
    assert err.startswith("error: a postgresql:// checkpoint database needs the `postgres` extra: pip install")
    assert "s3cret-pw" not in err


def test_list_shows_the_values_the_rule_acted_on_when_it_fired_on_a_later_attempt(tmp_path: Path) -> None:
    path = tmp_path / "later.sqlite"
    with open_saver(path, must_exist=False) as saver:
        graph = guardrail_graph(later_escalation_guard(), checkpointer=saver)
        graph.invoke({"messages": [image_message()]}, {"configurable": {"thread_id": "t-2"}})
    code, out, _ = invoke("list", "--db", str(path))
    assert code == 0
    lines = out.splitlines()
    assert "  candidate:  red" in lines  # the best attempt's answer and confidences ...
    assert any(line.startswith("  confidence: visual 0.45, reasoning 0.53,") for line in lines)
    # ... beside the values the escalating rule tested, on the later attempt
    assert "  rule:       rules[0] both-doubtful (tested visual 0.30, reasoning 0.35)" in lines
