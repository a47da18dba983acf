"""A real PostgreSQL server for the escalation tests: a throwaway cluster, started and always stopped by the test.

:func:`running_postgres` runs the Debian package's server binaries (``make postgres`` installs them): ``initdb``
makes a cluster in a fresh temporary directory (a superuser ``guardrail`` with a random password, password
authentication for every connection), ``postgres`` serves it on 127.0.0.1 and a free port (its unix socket in the
same directory), and afterwards the server gets a fast shutdown (SIGINT) and the directory is removed. PostgreSQL
refuses to run as root, so when the tests run as root both programs run as an unprivileged user (``postgres``,
which the Debian package creates, else ``nobody``): ``subprocess`` switches user and group itself
(``user=``/``group=``, supplementary groups dropped), no ``su`` or ``runuser`` needed, and the directory is
theirs.

Without the binaries or the ``postgres`` extra (``psycopg``) the tests skip, saying how to install them, except
under ``GUARDRAIL_REQUIRE_POSTGRES=1`` (CI), where they fail: there the server must be present.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import free_port

SUPERUSER = "guardrail"
START_TIMEOUT = 60.0
_VERSION = re.compile(r"/postgresql/(\d+)(?:\.(\d+))?/")


def _unavailable(message: str) -> None:
    if os.environ.get("GUARDRAIL_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"GUARDRAIL_REQUIRE_POSTGRES=1 but {message}")
    pytest.skip(message)


def server_bindir() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: on ``PATH``, else the newest ``/usr/lib/postgresql/N/bin``
    (Debian keeps them there, off ``PATH``)."""
    on_path = shutil.which("initdb")
    if on_path is not None and (found := Path(on_path).resolve().parent / "postgres").is_file():
        return found.parent
    installed = Path("/usr/lib/postgresql").glob("*/bin/initdb")
    candidates = [p.parent for p in installed if (p.parent / "postgres").is_file()]

    def version(path: Path) -> tuple[int, int]:
        match = _VERSION.search(f"{path}/")
        return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)

    return max(candidates, key=version, default=None)


def require_postgres() -> Path:
    """The server binaries' folder; skips (or, under ``GUARDRAIL_REQUIRE_POSTGRES=1``, fails) without them or
    without the ``postgres`` extra."""
    try:
        import langgraph.checkpoint.postgres  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        _unavailable(f"the `postgres` extra is not installed ({exc}): run `make install`")
    bindir = server_bindir()
    if bindir is None:
        _unavailable("PostgreSQL's initdb and postgres were not found: run `make postgres` (apt-get postgresql)")
    assert bindir is not None
    return bindir


@dataclass
class PostgresServer:
    """A running throwaway PostgreSQL server."""

    host: str
    port: int
    password: str
    directory: Path
    log: Path
    _databases: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres", *, password: str | None = None, user: str = SUPERUSER) -> str:
        """``postgresql://guardrail:PASSWORD@127.0.0.1:PORT/DATABASE`` (another ``password`` to test refusals)."""
        return f"postgresql://{user}:{password or self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "escalations") -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"{prefix}_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` on the database of ``url`` (autocommit); the rows it returns."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def tables(self, url: str) -> set[str]:
        """The tables of the database's ``public`` schema."""
        rows = self.execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {str(row[0]) for row in rows}


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to an unprivileged user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    _unavailable("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")
    return {}


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Create a cluster in a temporary directory, serve it on 127.0.0.1, and always stop it and remove it."""
    bindir = require_postgres()
    run_as = _run_as()
    # /tmp rather than $TMPDIR when dropping root: the unprivileged user must reach the directory.
    directory = Path(tempfile.mkdtemp(prefix="guardrail-postgres-", dir="/tmp" if run_as else None))
    try:
        if run_as:
            os.chown(directory, run_as["user"], run_as["group"])
        password = secrets.token_urlsafe(18)
        password_file = directory / "password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        if run_as:
            os.chown(password_file, run_as["user"], run_as["group"])
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        log = directory / "server.log"
        initdb = subprocess.run(
            [bindir / "initdb", "-D", directory / "data", "-U", SUPERUSER, f"--pwfile={password_file}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
            env=environment, cwd=directory, capture_output=True, text=True, timeout=120, check=False, **run_as,
        )  # fmt: skip
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed ({initdb.returncode}):\n{initdb.stdout[-2000:]}\n{initdb.stderr[-2000:]}")
        password_file.unlink()
        with _serving(bindir, directory, environment, run_as, log) as (process, port):
            server = PostgresServer(host="127.0.0.1", port=port, password=password, directory=directory, log=log)
            _wait_until_ready(server, process)
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _serving(
    bindir: Path, directory: Path, environment: dict[str, str], run_as: dict[str, Any], log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``postgres`` on a free port (another one if that port was taken meanwhile); stopped afterwards."""
    for _attempt in range(5):
        port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [bindir / "postgres", "-D", directory / "data", "-h", "127.0.0.1", "-p", str(port),
                 "-k", directory, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=50", "-c", "shared_buffers=16MB"],
                env=environment, cwd=directory, stdout=out, stderr=subprocess.STDOUT, **run_as,
            )  # fmt: skip
        try:
            time.sleep(0.2)
            if process.poll() is not None and "could not bind" in log.read_text(errors="replace"):
                continue  # the free port was taken between the probe and the start
            yield process, port
            return
        finally:
            _stop(process)
    pytest.fail(f"postgres could not bind a free port:\n{log.read_text(errors='replace')[-3000:]}")


def _wait_until_ready(server: PostgresServer, process: subprocess.Popen[bytes]) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"postgres exited with {process.returncode}:\n{server.log.read_text(errors='replace')[-3000:]}")
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"postgres did not accept connections in {START_TIMEOUT:.0f} s ({exc}):\n"
                            f"{server.log.read_text(errors='replace')[-3000:]}")  # fmt: skip
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: end sessions, checkpoint, exit); SIGQUIT, then SIGKILL, if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
        process.send_signal(sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
