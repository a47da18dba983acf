"""A real Arize Phoenix server for the end-to-end trace test: its own virtual environment, a free port, a
throw-away working directory, its own telemetry and internet access off.

The environment lives in ``.venv-phoenix`` at the repository root (git-ignored): created on first use, reused
afterwards. Phoenix and its many dependencies stay out of the project's own environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-phoenix"
REQUIREMENT = "arize-phoenix==20.26.1"
INSTALL_TIMEOUT = 1500
START_TIMEOUT = 180


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _usable(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    probe = subprocess.run([python, "-c", "import phoenix.server.main"], capture_output=True, timeout=120)
    return probe.returncode == 0


def _index_reachable() -> bool:
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/arize-phoenix/"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def ensure_venv() -> Path:
    """The Phoenix environment's python: reused when it works, else built beside it and moved into place.

    Skips the test only when the package index cannot be reached; any other failure fails it, with pip's
    output."""
    if _usable(VENV):
        return venv_python()
    building = VENV.with_name(f"{VENV.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", building], check=True, timeout=300)
    install = subprocess.run(
        [venv_python(building), "-m", "pip", "install", "--quiet", REQUIREMENT],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    if install.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        if not _index_reachable():
            pytest.skip(f"cannot install {REQUIREMENT}: the package index is unreachable")
        pytest.fail(f"installing {REQUIREMENT} failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
    if _usable(VENV):  # another run finished first: keep its environment
        shutil.rmtree(building, ignore_errors=True)
    else:
        shutil.rmtree(VENV, ignore_errors=True)
        building.rename(VENV)  # `python -m ...` needs no absolute paths, so the move keeps it working
    return venv_python()


@dataclass
class Phoenix:
    """A running Phoenix server."""

    url: str
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span of ``project`` through the REST API, attributes and events flattened to plain dicts."""
        try:
            data = self.get(f"/v1/projects/{project}/spans/otlpv1?limit=1000")["data"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # the project appears with its first span
                return []
            raise
        return [_plain_span(span) for span in data]


def _value(any_value: dict[str, Any]) -> Any:
    return next((v for v in any_value.values() if v is not None), None)


def _plain_span(span: dict[str, Any]) -> dict[str, Any]:
    return {
        **span,
        "attributes": {a["key"]: _value(a["value"]) for a in span.get("attributes") or []},
        "events": [
            {"name": e["name"], "attributes": {a["key"]: _value(a["value"]) for a in e.get("attributes") or []}}
            for e in span.get("events") or []
        ],
    }


@contextmanager
def running_phoenix(workdir: Path) -> Iterator[Phoenix]:
    """Start Phoenix on 127.0.0.1 (HTTP and gRPC on free ports), wait until healthy, and always stop it."""
    python = ensure_venv()
    port, grpc_port = free_port(), free_port()
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(workdir / "phoenix"),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log = workdir / "phoenix.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [python, "-m", "phoenix.server.main", "serve"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    phoenix = Phoenix(url=f"http://127.0.0.1:{port}", log=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"Phoenix exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(phoenix.url + "/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Phoenix did not become healthy in {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield phoenix
    finally:
        stop_process(process)
