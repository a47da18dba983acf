"""Durable escalation in a real SQLite checkpointer: listing, resolving, and a resume in another process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import guardrail
from guardrail import ConfigurationError, InputError
from guardrail.integrations import list_escalations, load_graph_factory, open_saver, resolve_escalation
from tests.support.graphs import build_graph
from tests.support.integration import image_message

ROOT = Path(guardrail.__file__).resolve().parents[1]


def start(db: Path, *threads: str) -> None:
    with open_saver(db, must_exist=False) as saver:
        graph = build_graph(saver)
        for thread in threads:
            graph.invoke({"messages": [image_message()]}, {"configurable": {"thread_id": thread}})


def python(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def test_pending_escalations_are_listed_from_the_database_alone(tmp_path: Path) -> None:
    db = tmp_path / "checkpoints.sqlite"
    start(db, "b-thread", "a-thread")
    with open_saver(db) as saver:
        pending = list_escalations(saver)
    assert [p.thread_id for p in pending] == ["a-thread", "b-thread"]
    assert pending[0].question == "What colour is the shape?"
    assert pending[0].candidate_answer == "green"
    assert pending[0].confidence["visual"] == 0.2
    assert pending[0].reason == "both visual and reasoning confidence are low"


def test_a_resolved_escalation_is_no_longer_listed(tmp_path: Path) -> None:
    db = tmp_path / "checkpoints.sqlite"
    start(db, "t1", "t2")
    with open_saver(db) as saver:
        final = resolve_escalation(saver, "t1", {"type": "answer", "answer": "teal"}, graph=build_graph)
        assert final["messages"][-1].content == "teal"
        assert [p.thread_id for p in list_escalations(saver)] == ["t2"]


def test_open_saver_refuses_a_missing_database(tmp_path: Path) -> None:
    with (
        pytest.raises(InputError, match=r"checkpoint database '.*missing.sqlite' does not exist"),
        open_saver(tmp_path / "missing.sqlite"),
    ):
        pass


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no_colon", "must be 'module:function' or 'file.py:function'"),
        ("guardrail_no_such_module:f", "cannot import graph factory module 'guardrail_no_such_module'"),
        ("tests.support.graphs:nope", "has no callable 'nope'"),
        ("missing/file.py:f", "no such file 'missing/file.py'"),
    ],
)
def test_graph_factory_specs_fail_with_what_is_wrong(spec: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        load_graph_factory(spec)


def test_graph_factories_load_from_a_module_or_a_file() -> None:
    assert load_graph_factory("tests.support.graphs:build_graph") is build_graph
    assert callable(load_graph_factory(str(ROOT / "tests/support/graphs.py") + ":build_graph"))


def test_escalation_survives_the_process_and_is_resumed_by_another(tmp_path: Path) -> None:
    db = str(tmp_path / "checkpoints.sqlite")
    first = python("-m", "tests.support.graphs", db, "thread-42")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "waiting: green"

    listed = python("-m", "guardrail.cli", "escalations", "list", "--db", db)
    assert listed.returncode == 0, listed.stderr
    assert "thread thread-42" in listed.stdout
    assert "question:   What colour is the shape?" in listed.stdout
    assert "candidate:  green" in listed.stdout
    assert "confidence: visual 0.20, reasoning 0.20, overall 0.20" in listed.stdout

    graph = "tests.support.graphs:build_graph"
    second = python(
        "-m", "guardrail.cli", "escalations", "resolve", "thread-42", "--db", db, "--answer", "purple",
        "--graph", graph, GUARDRAIL_TEST_NO_MODEL="1",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "final message: purple" in second.stdout

    with open_saver(db) as saver:
        assert list_escalations(saver) == []
        state: dict[str, Any] = build_graph(saver).get_state({"configurable": {"thread_id": "thread-42"}}).values
    assert state["messages"][-1].content == "purple"
    assert state["review"] == {"type": "answer", "answer": "purple"}
    assert state["guardrail"]["escalation"]["candidate_answer"] == "green"


def build_agent(checkpointer: Any) -> Any:
    """A create_agent graph guarded by the middleware: its escalations are listed and resolved the same way."""
    from langchain.agents import create_agent

    from guardrail.integrations import GuardrailChatModel, GuardrailMiddleware
    from tests.support.fakes import ScriptedModel
    from tests.support.integration import ESCALATE, scripted_guard

    guard, _ = scripted_guard(ESCALATE)
    return create_agent(
        GuardrailChatModel(backend=ScriptedModel()), middleware=[GuardrailMiddleware(guard)], checkpointer=checkpointer
    )


def test_agent_escalations_are_listed_and_resolved_from_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "agent.sqlite"
    with open_saver(db, must_exist=False) as saver:
        build_agent(saver).invoke({"messages": [image_message()]}, {"configurable": {"thread_id": "agent-9"}})
    with open_saver(db) as saver:
        (pending,) = list_escalations(saver)
        assert (pending.thread_id, pending.candidate_answer) == ("agent-9", "green")
        assert pending.payload["thread_id"] == "agent-9"
        final = resolve_escalation(saver, "agent-9", {"type": "approve"}, graph=build_agent)
        assert final["messages"][-1].content == "green"
        assert list_escalations(saver) == []


# -- PostgreSQL URLs, without a server (tests/integrations/test_escalations_postgres.py runs a real one) ------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://agent:s3cret@db:5432/escalations", "postgresql://agent:***@db:5432/escalations"),
        ("postgres://agent:p%40ss@h1:5432,h2:5433/db?sslmode=require", "postgres://agent:***@h1:5432,h2:5433/db?sslmode=require"),
        ("postgresql:///db?host=/run/pg&password=s3cret", "postgresql:///db?host=/run/pg&password=***"),
        ("postgresql://agent@db/escalations", "postgresql://agent@db/escalations"),
        ("agent.sqlite", "agent.sqlite"),
    ],
)  # fmt: skip
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    from guardrail.integrations.escalations import redacted

    assert redacted(url) == shown


def test_open_saver_refuses_a_url_of_another_database(tmp_path: Path) -> None:
    with (
        pytest.raises(InputError, match=r"'mysql://u:\*\*\*@db/x': mysql:// is not supported; give a SQLite file or"),
        open_saver("mysql://u:pw@db/x"),
    ):
        pass


def test_a_postgres_url_without_the_extra_names_the_extra_and_never_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for module in ("guardrail.integrations._postgres", "langgraph.checkpoint.postgres"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    hint = r"a postgresql:// checkpoint database needs the `postgres` extra: pip install 'lvlm-guardrail\[postgres\]'"
    with (
        pytest.raises(ConfigurationError, match=hint),
        open_saver("postgresql://agent:s3cret@127.0.0.1/escalations", must_exist=False),
    ):
        pass
    assert list(tmp_path.iterdir()) == []  # no SQLite file named after the URL


def test_a_server_that_refuses_the_connection_is_an_input_error_without_the_password() -> None:
    port = closed_port()
    url = f"postgresql://agent:s3cret-pw@127.0.0.1:{port}/escalations"
    with pytest.raises(InputError) as refused, open_saver(url, must_exist=False):
        pass
    message = str(refused.value)
    shown = f"postgresql://agent:***@127.0.0.1:{port}/escalations"
    assert message.startswith(f"cannot connect to the PostgreSQL checkpoint database {shown!r}: connection failed")
    assert "Connection refused" in message
    assert "s3cret-pw" not in message
    assert "\n" not in message
    assert refused.value.__cause__ is None  # the driver's own exception, which holds the URL, is not chained


def test_a_malformed_postgres_url_is_an_input_error_without_the_password() -> None:
    with (
        pytest.raises(InputError, match="is not a valid PostgreSQL URL") as refused,
        open_saver("postgresql://agent:s3cret-pw@127.0.0.1/escalations?no_such_option=1"),
    ):
        pass
    assert "s3cret-pw" not in str(refused.value)
