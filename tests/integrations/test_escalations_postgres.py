"""Escalations on a real PostgreSQL server (a throwaway cluster this module starts and stops): worker processes
escalate into one database, another process lists and resolves through the CLI, every thread resumes once.

The model is scripted to always escalate: these tests are about the store, not the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import guardrail
from guardrail import InputError
from guardrail.integrations import list_escalations, open_saver, resolve_escalation
from guardrail.integrations.review_app import create_review_app
from tests.support.graphs import build_graph
from tests.support.integration import image_message, png_bytes
from tests.support.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.slow

ROOT = Path(guardrail.__file__).resolve().parents[1]
GRAPH = "tests.support.graphs:build_graph"
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    """A fresh, empty database of its own for each test."""
    return postgres.create_database()


def environment(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def spawn(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=environment(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=180)
    return process.returncode, out, err


def cli(*args: str) -> tuple[int, str, str]:
    """``guardrail escalations ARGS`` in a process of its own; a resume must never build the model."""
    return finish(spawn("-m", "guardrail.cli", "escalations", *args, GUARDRAIL_TEST_NO_MODEL="1"))


def state_of(url: str, thread: str) -> dict[str, Any]:
    with open_saver(url, read_only=True) as saver:
        values: dict[str, Any] = build_graph(saver).get_state({"configurable": {"thread_id": thread}}).values
    return values


def test_two_workers_escalate_and_another_process_lists_and_resolves_each_thread_once(url: str) -> None:
    threads = {"worker-a": ["a-1", "a-2", "a-3"], "worker-b": ["b-1", "b-2", "b-3"]}
    # Both workers start together on a database that has no tables yet: both set it up, neither fails.
    workers = [spawn("-m", "tests.support.graphs", url, *ids) for ids in threads.values()]
    for worker, ids in zip(workers, threads.values(), strict=True):
        code, out, err = finish(worker)
        assert code == 0, err
        assert out.splitlines() == ["waiting: green"] * len(ids)
    every = sorted(t for ids in threads.values() for t in ids)

    code, out, err = cli("list", "--db", url, "--json")
    assert code == 0, err
    listed = [json.loads(line) for line in out.splitlines()]
    assert [item["thread_id"] for item in listed] == every  # nothing lost
    assert {item["candidate_answer"] for item in listed} == {"green"}
    assert all(item["question"] == "What colour is the shape?" for item in listed)

    for thread in every:
        code, out, err = cli("resolve", thread, "--db", url, "--answer", f"teal {thread}", "--graph", GRAPH)
        assert (code, out.strip()) == (0, f"thread {thread}: answer; final message: teal {thread}"), err

    for thread in every:  # resolving again is refused: nothing is resolved twice
        code, out, err = cli("resolve", thread, "--db", url, "--approve", "--graph", GRAPH)
        assert (code, err.strip()) == (1, f"error: thread {thread!r} has no pending guardrail escalation"), out

    code, out, err = cli("list", "--db", url)
    assert (code, out.strip()) == (0, "no pending escalations"), err
    for thread in every:  # each thread resumed with its own answer, exactly once
        state = state_of(url, thread)
        assert [(m.type, m.content) for m in state["messages"][1:]] == [("ai", f"teal {thread}")]
        assert state["review"] == {"type": "answer", "answer": f"teal {thread}"}
        assert state["guardrail"]["escalation"]["candidate_answer"] == "green"


def test_two_reviewers_answering_one_escalation_at_once_resume_it_once(url: str) -> None:
    code, _, err = finish(spawn("-m", "tests.support.graphs", url, "contested"))
    assert code == 0, err
    reviewers = [
        spawn("-m", "guardrail.cli", "escalations", "resolve", "contested", "--db", url, "--answer", answer,
              "--graph", GRAPH, GUARDRAIL_TEST_NO_MODEL="1")
        for answer in ("olive", "purple")
    ]  # fmt: skip
    results = [finish(reviewer) for reviewer in reviewers]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    (winner,) = [out for code, out, _ in results if code == 0]
    (loser,) = [err for code, _, err in results if code == 1]
    assert loser.strip() == "error: thread 'contested' has no pending guardrail escalation"
    answer = winner.strip().rsplit(" ", 1)[-1]
    state = state_of(url, "contested")
    assert [(m.type, m.content) for m in state["messages"][1:]] == [("ai", answer)]


def test_workers_setting_up_a_fresh_database_together_all_succeed(postgres: PostgresServer, url: str) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver

    start = threading.Barrier(6)
    failures: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            with open_saver(url, must_exist=False) as saver:
                assert list_escalations(saver) == []
        except BaseException as exc:  # reported below
            failures.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert failures == []
    versions = postgres.execute(url, "SELECT v FROM checkpoint_migrations ORDER BY v")
    assert [v for (v,) in versions] == list(range(len(PostgresSaver.MIGRATIONS)))


def test_refusals_name_the_problem_and_never_print_the_password(postgres: PostgresServer, url: str) -> None:
    wrong = postgres.url(url.rsplit("/", 1)[1], password="not-the-password-42")
    with pytest.raises(InputError) as refused, open_saver(wrong):
        pass
    message = str(refused.value)
    assert "cannot connect to the PostgreSQL checkpoint database" in message
    assert 'password authentication failed for user "guardrail"' in message
    assert "not-the-password-42" not in message
    assert ":***@127.0.0.1" in message

    with (
        pytest.raises(InputError, match='database "nowhere" does not exist') as missing,
        open_saver(postgres.url("nowhere")),
    ):
        pass
    assert postgres.password not in str(missing.value)

    code, out, err = cli("list", "--db", wrong)
    assert code == 2, out
    assert err.startswith("error: cannot connect"), err
    assert err.count("\n") == 1, err
    assert "not-the-password-42" not in out + err

    code, out, err = cli("serve", "--db", postgres.url("nowhere"), "--graph", GRAPH)
    assert code == 2, out
    assert postgres.password not in out + err
    assert 'database "nowhere" does not exist' in err


def test_the_password_may_stay_off_the_command_line_and_is_never_printed(postgres: PostgresServer, url: str) -> None:
    code, _, err = finish(spawn("-m", "tests.support.graphs", url, "t-1"))
    assert code == 0, err
    without = url.replace(f":{postgres.password}@", "@")
    code, out, err = finish(
        spawn("-m", "guardrail.cli", "escalations", "list", "--db", without, PGPASSWORD=postgres.password)
    )
    assert code == 0, err
    assert out.startswith("thread t-1\n"), out

    serve = spawn("-m", "guardrail.cli", "escalations", "serve", "--db", url, "--graph", GRAPH)
    try:
        assert serve.stdout is not None
        announced = serve.stdout.readline()
    finally:
        serve.terminate()
        out, err = serve.communicate(timeout=60)
    shown = url.replace(f":{postgres.password}@", ":***@")
    assert announced.startswith(f"Reviewing the escalations pending in {shown}; open this address"), announced + err
    assert postgres.password not in announced + out + err


def test_a_database_that_is_not_a_checkpoint_database_is_refused_and_left_unchanged(
    postgres: PostgresServer, url: str
) -> None:
    postgres.execute(url, "CREATE TABLE users (id serial PRIMARY KEY, name text)")
    for args in (["list", "--db", url], ["resolve", "t-1", "--db", url, "--approve", "--graph", GRAPH]):
        code, _, err = cli(*args)
        assert code == 2
        assert "is not a checkpoint database (a PostgreSQL database without the checkpointer's" in err
        assert "it was not changed" in err
        assert postgres.password not in err
    assert postgres.tables(url) == {"users"}

    other = postgres.create_database("foreign")
    postgres.execute(other, "CREATE TABLE checkpoints (id serial PRIMARY KEY, note text)")
    with (
        pytest.raises(InputError, match=r"its table\(s\) 'checkpoints' are not the checkpointer's"),
        open_saver(other, must_exist=False),
    ):
        pass
    assert postgres.tables(other) == {"checkpoints"}


def test_listing_never_writes(postgres: PostgresServer, url: str) -> None:
    with open_saver(url, must_exist=False) as saver:
        build_graph(saver).invoke({"messages": [image_message()]}, {"configurable": {"thread_id": "t-1"}})
    with open_saver(url, read_only=True) as saver:
        assert [p.thread_id for p in list_escalations(saver)] == ["t-1"]
    with (
        pytest.raises(InputError, match=r"cannot execute .* in a read-only transaction"),
        open_saver(url, read_only=True) as saver,
    ):
        saver.delete_thread("t-1")
    with open_saver(url, read_only=True) as saver:
        assert [p.thread_id for p in list_escalations(saver)] == ["t-1"]


def test_listing_by_query_finds_what_reading_every_checkpoint_finds(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import guardrail.integrations.escalations as escalations

    with open_saver(url, must_exist=False) as saver:
        graph = build_graph(saver)
        for thread in ("t-3", "t-1", "t-2", "t-4"):
            graph.invoke({"messages": [image_message()]}, {"configurable": {"thread_id": thread}})
        resolve_escalation(saver, "t-2", {"type": "approve"}, graph=build_graph)
        by_query = list_escalations(saver)
        monkeypatch.setattr(escalations, "_postgres_module", lambda saver: None)
        by_reading_everything = list_escalations(saver)
    assert [p.thread_id for p in by_query] == ["t-1", "t-3", "t-4"]
    assert by_query == by_reading_everything


def test_the_review_page_reviews_postgres_escalations_with_images_from_a_shared_store(url: str, tmp_path: Path) -> None:
    written = tmp_path / "written-here"
    code, _, err = finish(spawn("-m", "tests.support.graphs", url, "r-1", "r-2", "--images", str(written)))
    assert code == 0, err
    mounted = tmp_path / "mounted-there"  # the reviewer's machine sees the shared folder under another path
    shutil.move(written, mounted)
    sha = hashlib.sha256(png_bytes()).hexdigest()

    plain = TestClient(create_review_app(url, token=TOKEN, graph=build_graph), base_url="http://127.0.0.1:8765")
    assert plain.get(f"/?token={TOKEN}").status_code == 200
    assert plain.get(f"/images/{sha}").status_code == 410  # the recorded path is not there

    client = TestClient(
        create_review_app(url, token=TOKEN, graph=build_graph, images=mounted), base_url="http://127.0.0.1:8765"
    )
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200
    assert "r-1" in page.text
    assert "r-2" in page.text
    image = client.get(f"/images/{sha}")
    assert (image.status_code, image.content) == (200, png_bytes())

    with open_saver(url, read_only=True) as saver:
        first = next(p for p in list_escalations(saver) if p.thread_id == "r-1")
    form = client.get(f"/escalations/{first.interrupt_id}").text
    csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    decided = client.post(
        f"/escalations/{first.interrupt_id}", data={"csrf": csrf, "decision": "answer", "answer": "teal"},
        follow_redirects=False,
    )  # fmt: skip
    assert decided.status_code == 303
    assert [(m.type, m.content) for m in state_of(url, "r-1")["messages"][1:]] == [("ai", "teal")]
    with open_saver(url, read_only=True) as saver:
        assert [p.thread_id for p in list_escalations(saver)] == ["r-2"]
