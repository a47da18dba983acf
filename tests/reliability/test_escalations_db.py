"""``guardrail escalations`` on files that are not checkpoint databases: a clear error, exit 2, nothing written.

The issue: ``list --db some.png`` printed a raw ``sqlite3.DatabaseError`` traceback; an unrelated SQLite
database silently gained ``checkpoints`` / ``writes`` tables; a 0-byte file became a 20 KB database. Real
SQLite files throughout, through the CLI runner.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from PIL import Image
from typer.testing import CliRunner

from guardrail.cli import _register, app
from guardrail.errors import InputError
from guardrail.integrations import list_escalations, open_saver
from tests.support.graphs import build_graph
from tests.support.integration import image_message


def invoke(*args: str) -> tuple[int, str, str]:
    _register()
    result = CliRunner().invoke(app, ["escalations", *args])
    return result.exit_code, result.stdout, result.stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` and a digest of its bytes: proof that nothing was written or created."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def png(path: Path) -> None:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path, format="PNG")


def empty(path: Path) -> None:
    path.write_bytes(b"")


def other_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()


FOREIGN: dict[str, tuple[Callable[[Path], None], str]] = {
    "png": (png, r"is not a checkpoint database \(file is not a database\)"),
    "empty": (empty, r"is not a checkpoint database \(the file is empty\)"),
    "other sqlite": (
        other_sqlite,
        r"is not a checkpoint database \(a SQLite database without the checkpointer's 'checkpoints' and "
        r"'writes' table\(s\)\); it was not changed",
    ),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
@pytest.mark.parametrize("command", ["list", "resolve"])
def test_a_foreign_file_is_exit_2_and_left_unchanged(tmp_path: Path, kind: str, command: str) -> None:
    make, message = FOREIGN[kind]
    path = tmp_path / "some.file"
    make(path)
    before = snapshot(tmp_path)
    args = ["list", "--db", str(path)] if command == "list" else ["resolve", "t-1", "--db", str(path), "--approve"]
    code, out, err = invoke(*args)
    assert code == 2, (out, err)
    assert err.startswith("error: "), err
    assert err.count("\n") == 1  # one line, no traceback
    assert "Traceback" not in err
    assert re.search(message, err), err
    assert snapshot(tmp_path) == before


def test_a_directory_is_exit_2(tmp_path: Path) -> None:
    code, _, err = invoke("list", "--db", str(tmp_path))
    assert code == 2
    assert "is not a file" in err


@pytest.fixture
def checkpoint_db(tmp_path: Path) -> Path:
    path = tmp_path / "agent.sqlite"
    with open_saver(path, must_exist=False) as saver:
        graph = build_graph(saver)
        graph.invoke({"messages": [image_message()]}, {"configurable": {"thread_id": "t-7"}})
    return path


def test_list_opens_a_checkpoint_database_read_only(checkpoint_db: Path) -> None:
    before = snapshot(checkpoint_db.parent)
    code, out, _ = invoke("list", "--db", str(checkpoint_db))
    assert code == 0
    assert out.startswith("thread t-7")
    after = snapshot(checkpoint_db.parent)
    assert after[checkpoint_db.name] == before[checkpoint_db.name]
    assert set(after) - set(before) <= {f"{checkpoint_db.name}-wal", f"{checkpoint_db.name}-shm"}  # SQLite's own
    with open_saver(checkpoint_db, read_only=True) as saver:
        assert [e.thread_id for e in list_escalations(saver)] == ["t-7"]
    with (
        pytest.raises(InputError, match="cannot be used: attempt to write a readonly database"),
        open_saver(checkpoint_db, read_only=True) as saver,
    ):
        cast(SqliteSaver, saver).conn.execute("CREATE TABLE x (y)")  # a file opens as a SqliteSaver


def test_a_new_database_may_start_from_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    path.write_bytes(b"")  # e.g. a temporary file created for it
    with open_saver(path, must_exist=False) as saver:
        assert list_escalations(saver) == []
    with open_saver(path, read_only=True) as saver:
        assert list_escalations(saver) == []
