"""``guardrail ask`` as a careless or hostile user drives it (issue 27): each case with the memory and time it may take.

The real console command on the shipped reference model, in a subprocess whose address space is capped
(``RLIMIT_AS``) and whose peak resident memory is measured (its own ``VmHWM``), killed if it outlives its time.
Before the fixes: an image path that was ``/dev/zero`` (or a link to it) grew the process until the OOM killer
stopped it, and lost the valid line of the same batch; ``/dev/urandom`` ended in a ``MemoryError`` traceback; a FIFO
blocked forever (SIGTERM could not stop it); one 20,000-word question in a batch of 16 took 8.3 GB and made all 16
calls abstain on the time budget, exit 0; an unknown ``"images"`` key was silently ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guardrail.data.easyvqa import data_dir
from guardrail.image_refs import MAX_IMAGE_BYTES

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX devices, FIFOs, sockets and resource limits"),
    pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero and /dev/urandom"),
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc"),
]

REPO = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),  # this checkout
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OTEL_SDK_DISABLED": "true",
    "OMP_NUM_THREADS": "1",
}
ADDRESS_SPACE = 3 * 2**30
"""The child's address-space cap: reading /dev/zero unbounded dies here, not on the machine (a run takes ~0.5 GiB)."""
PEAK_MIB = 1024
"""The most resident memory a run may take (the reference model's runs take about 450 MiB)."""

QUESTION = "what is the color of the shape?"  # easy-VQA test image 0: a red triangle, accepted by the default policy


@dataclass
class Run:
    code: int
    records: list[dict[str, Any]]
    stderr: str
    seconds: float
    peak_mib: float


# The console command, run as `python -m guardrail.cli` runs it, that also writes its own peak resident memory
# (VmHWM, in KiB) to the file $GUARDRAIL_TEST_PEAK on the way out, however it exits (exit codes, os._exit after
# flushing, a MemoryError). ru_maxrss from wait4 would not do: it carries the parent's peak across fork and exec.
_LAUNCH = """
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as status, open(os.environ["GUARDRAIL_TEST_PEAK"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(peak)
sys.argv[0] = "guardrail"
runpy.run_module("guardrail.cli", run_name="__main__")
"""


def run_cli(args: list[str], cwd: Path, *, timeout: float = 180) -> Run:
    """Run ``guardrail ARGS`` in ``cwd`` under the address-space cap; killed (and the test failed) past ``timeout``."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    out, err, peak = cwd / "stdout.jsonl", cwd / "stderr.txt", cwd / "peak.txt"
    start = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, *args],
            cwd=cwd,
            env={**ENV, "GUARDRAIL_TEST_PEAK": str(peak)},
            stdout=stdout,
            stderr=stderr,
            preexec_fn=cap,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    seconds = time.monotonic() - start
    stderr_text = err.read_text(errors="replace")
    assert seconds < timeout, f"killed after {timeout} s; stderr:\n{stderr_text[-2000:]}"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    peak_mib = int(peak.read_text()) / 1024 if peak.exists() else float("nan")
    return Run(process.returncode, records, stderr_text, seconds, peak_mib)


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short folder path (a socket's path is limited to about 100 bytes) with the valid image in it."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="hostile-") as name:
        path = Path(name)
        shutil.copy(data_dir() / "test" / "images" / "0.png", path / "shape.png")
        yield path


@contextlib.contextmanager
def fifo(path: Path) -> Iterator[Path]:
    """A FIFO no one writes to; a reader that blocked on it anyway is released afterwards."""
    os.mkfifo(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):  # ENXIO: no reader is waiting, as it should be
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def write_batch(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def assert_accepted(record: dict[str, Any]) -> None:
    assert record["status"] == "accepted", record
    assert record["answer"] == "red"
    assert record["error"] is None
    assert record["seconds"] < 10  # answered at once, never waiting out the 30 s budget


def test_image_paths_that_are_not_image_files_are_line_errors_and_the_batch_goes_on(folder: Path) -> None:
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "a folder").mkdir()
    with (folder / "huge.png").open("wb") as file:
        file.truncate(MAX_IMAGE_BYTES + 1)  # sparse: no disk taken, and never read
    expected = {
        "/dev/zero": "/dev/zero: is a character device, not an image file (only regular files are read)",
        "zero.png": f"{folder}/zero.png: is a character device (a link to /dev/zero), not an image file",
        "/dev/urandom": "/dev/urandom: is a character device, not an image file",
        "fifo.png": f"{folder}/fifo.png: is a pipe (FIFO), not an image file",
        "socket.png": f"{folder}/socket.png: is a socket, not an image file",
        "a folder": f"{folder}/a folder: is a directory, not an image file",
        "huge.png": f"{folder}/huge.png: is 268,435,457 bytes, over the limit of 268,435,456 bytes (256 MiB)",
    }
    lines = [{"image": image, "question": QUESTION} for image in ["shape.png", *expected, "shape.png"]]
    batch = write_batch(folder / "questions.jsonl", lines)
    with fifo(folder / "fifo.png"), socket.socket(socket.AF_UNIX) as server:
        server.bind(str(folder / "socket.png"))
        run = run_cli(["ask", "--batch", str(batch)], folder)

    assert run.code == 1, run.stderr  # some lines failed; no traceback, no kill
    assert "Traceback" not in run.stderr
    assert [r["line"] for r in run.records] == list(range(1, len(lines) + 1))
    assert_accepted(run.records[0])
    assert_accepted(run.records[-1])
    for number, (record, message) in enumerate(zip(run.records[1:-1], expected.values(), strict=True), start=2):
        assert record["status"] == "error"
        assert record["error"]["stage"] == "input"
        assert record["error"]["type"] == "ImageError"
        assert record["error"]["message"].startswith(f"{batch}:{number}: {message}"), record
    assert run.stderr.strip().splitlines()[-1] == (
        f"{batch}: 9 lines: 2 answered (2 accepted, 0 abstained, 0 escalated), 7 failed"
    )
    assert run.peak_mib < PEAK_MIB, run
    assert run.seconds < 120, run
    print(f"hostile image paths: {run.seconds:.1f} s, peak {run.peak_mib:.0f} MiB")


@pytest.mark.parametrize("image", ["fifo.png", "/dev/zero", "/dev/urandom", "zero.png"])
def test_one_question_on_a_device_or_a_fifo_is_refused_before_the_model_loads(folder: Path, image: str) -> None:
    (folder / "zero.png").symlink_to("/dev/zero")
    with fifo(folder / "fifo.png"):
        run = run_cli(["ask", image, QUESTION], folder, timeout=60)
    assert run.code == 2, run.stderr
    assert run.stderr.startswith(f"error: {image}: is a ")
    assert "not an image file (only regular files are read)" in run.stderr
    assert run.records == []
    assert run.peak_mib < 200, run  # the model was never loaded
    assert run.seconds < 30, run  # before: a FIFO blocked forever, /dev/zero ran until the memory cap
    print(f"ask {image}: {run.seconds:.1f} s, peak {run.peak_mib:.0f} MiB")


def test_a_signal_still_stops_a_batch_that_names_a_fifo(folder: Path) -> None:
    """Nothing blocks now, so the stop flag is seen: SIGTERM during the batch ends it as 143 with whole lines."""
    lines = [{"image": "fifo.png", "question": QUESTION}] + [{"image": "shape.png", "question": QUESTION}] * 4000
    batch = write_batch(folder / "questions.jsonl", lines)
    with fifo(folder / "fifo.png"), (folder / "out.jsonl").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "guardrail.cli", "ask", "--batch", str(batch), "--batch-size", "4"],
            cwd=folder,
            env=ENV,
            stdout=out,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while (folder / "out.jsonl").read_bytes().count(b"\n") < 5:  # past the FIFO line and a chunk
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "no lines after 120 s"
                time.sleep(0.05)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
            stopped = time.monotonic() - sent
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 143, stderr.decode(errors="replace")
    records = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
    assert stopped < 30
    assert records[0]["status"] == "error"
    assert "fifo.png: is a pipe (FIFO)" in records[0]["error"]["message"]
    assert all(r["status"] == "accepted" for r in records[1:])
    print(f"stopped {stopped:.2f} s after SIGTERM, {len(records)} lines")


def test_a_question_longer_than_the_model_takes_fails_alone_in_its_batch(folder: Path) -> None:
    long = " ".join(["shape"] * 20_000) + " " + QUESTION
    lines: list[dict[str, Any]] = [{"image": "shape.png", "question": QUESTION}] * 15
    lines.insert(7, {"image": "shape.png", "question": long})
    lines.append({"image": "shape.png", "images": ["shape.png", "shape.png"], "question": QUESTION})
    batch = write_batch(folder / "questions.jsonl", lines)
    run = run_cli(["ask", "--batch", str(batch), "--batch-size", "16"], folder)

    assert run.code == 1, run.stderr
    assert len(run.records) == 17
    too_long = run.records[7]
    assert too_long["status"] == "error"
    assert too_long["error"]["type"] == "InputError"
    assert too_long["error"]["message"] == (
        f"{batch}:8: the question is too long for guardrail-reference-llava: its prompt takes at least 20,016 tokens "
        "of text, over the limit of 192 (the model's 256 positions less 64 kept for the answer; images count too)"
    )
    unknown = run.records[16]
    assert unknown["status"] == "error"
    assert unknown["error"]["message"] == (
        f'{batch}:17: unknown key(s) "images": a line has only "image" (one path) and "question" (text)'
    )
    for record in run.records[:7] + run.records[8:16]:
        assert_accepted(record)  # the other 15, batched together, each accepted as alone
    assert run.stderr.strip().splitlines()[-1] == (
        f"{batch}: 17 lines: 15 answered (15 accepted, 0 abstained, 0 escalated), 2 failed"
    )
    assert run.peak_mib < PEAK_MIB, run  # before: 8.3 GB
    assert run.seconds < 120, run
    print(f"a 20,000-word question in a batch of 16: {run.seconds:.1f} s, peak {run.peak_mib:.0f} MiB")
