"""SIGINT / SIGTERM stop long commands cleanly: exit 130 / 143, complete output lines, a one-line note.

The issue: Ctrl-C during ``guardrail ask --batch`` aborted the process ("terminate called without an active
exception", exit 134) because the interpreter shut down under a model call still running on a worker thread.
These run the real console script in a subprocess and send it real signals.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.support.tiny_vlms import save_tiny_llava

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

GUARDRAIL = [sys.executable, "-m", "guardrail.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OTEL_SDK_DISABLED": "true"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batch")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "red.png")
    path = folder / "questions.jsonl"
    lines = [json.dumps({"image": "red.png", "question": f"What colour is shape {i}?"}) for i in range(5000)]
    path.write_text("\n".join(lines) + "\n")
    return path


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def start_batch(model_dir: Path, batch: Path, out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [*GUARDRAIL, "ask", "--batch", str(batch), "--model", str(model_dir)],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=ENV,
        )


def wait_for_lines(process: subprocess.Popen[bytes], out: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while lines_in(out) < n:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, f"no {n} lines after {timeout} s"
        time.sleep(0.05)


def check_output(out: Path) -> list[dict[str, object]]:
    data = out.read_bytes()
    assert data.endswith(b"\n"), "the last line written is incomplete"
    records = [json.loads(line) for line in data.splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(records) + 1))
    return records


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_a_batch_after_the_current_line(
    model_dir: Path, batch: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    out = tmp_path / "out.jsonl"
    process = start_batch(model_dir, batch, out)
    wait_for_lines(process, out, 3)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    stderr = err.decode()
    assert process.returncode == code, stderr
    assert "terminate called" not in stderr
    records = check_output(out)
    notes = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(notes) == 1, stderr
    match = re.fullmatch(
        rf"interrupted by {sig.name} after (\d+) of 5000 lines: (\d+) answered \(.*\), 0 failed; "
        "every line written is complete",
        notes[0],
    )
    assert match, notes[0]
    assert int(match.group(1)) == len(records) >= 3


@pytest.mark.slow
def test_a_second_signal_stops_at_once_with_complete_lines(model_dir: Path, batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    process = start_batch(model_dir, batch, out)
    wait_for_lines(process, out, 2)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err.decode()
    assert "terminate called" not in err.decode()
    check_output(out)


def _labelled(folder: Path, n: int) -> Path:
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "red.png")
    rows = [{"image": "red.png", "question": f"What colour? {i}", "answer": "red"} for i in range(n)]
    path = folder / "labelled.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_calibrate_without_an_artifact(
    model_dir: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    data = _labelled(tmp_path, 3000)
    artifact = tmp_path / "calibration.json"
    process = subprocess.Popen(
        [*GUARDRAIL, "calibrate", "--model", str(model_dir), "--data", str(data), "--out", str(artifact)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    time.sleep(8)  # model loaded and scoring under way (3000 items take far longer)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    stderr = err.decode()
    assert process.returncode == code, stderr
    assert "terminate called" not in stderr
    assert re.search(rf"^interrupted by {sig.name} after scoring \d+ items; no artifact written$", stderr, re.M)
    assert not artifact.exists()


@pytest.mark.slow
def test_a_signal_stops_the_demo(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*GUARDRAIL, "demo", "-n", "400", "--out", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    time.sleep(20)  # the reference model loaded and questions under way (400 take far longer)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    stderr = err.decode()
    assert process.returncode == 130, stderr
    assert "terminate called" not in stderr
    assert re.search(r"^interrupted by SIGINT after \d+ of 400 questions; no summary written$", stderr, re.M)
    assert not (tmp_path / "demo" / "summary.json").exists()
