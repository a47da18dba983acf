"""Every command checks its outputs and inputs before its work: one ``error:`` line, exit code 2, no traceback.

Issue 27, item 4: ``guardrail train-verbalized --out`` (now ``guardrail train verbalized``) was checked only when
saving, after a quarter of an hour of training: an existing file or a read-only folder ended in a
``FileExistsError`` / ``PermissionError`` traceback.
These run the real console script in a subprocess and bound the time each refusal takes (no model is loaded, no
training starts). A folder nothing can be created in: a read-only folder, or under root (whom permission bits do not
stop) ``/sys``, where not even root can create a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrail.calibration import save_artifact
from guardrail.cli import _register, app
from guardrail.errors import CalibrationError
from guardrail.reference import reference_model_path
from tests.support.calibration import world_artifact

GUARDRAIL = [sys.executable, "-m", "guardrail.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OTEL_SDK_DISABLED": "true"}
_register()
QUICK = 30.0
"""Seconds a refusal may take at most: starting Python and importing what the command needs (about 1-5 s here;
the bound leaves room for a loaded machine). Training or scoring would take minutes."""


def guardrail(*args: str | Path) -> tuple[int, str, str, float]:
    start = time.monotonic()
    done = subprocess.run(
        [*GUARDRAIL, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300, check=False
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - start


def refused(code: int, out: str, err: str, seconds: float, message: str) -> None:
    """One line on stderr, ``error: `` + ``message`` exactly, exit code 2, quickly, and no traceback."""
    assert code == 2, err
    assert "Traceback" not in err + out
    assert err == f"error: {message}\n"
    assert seconds < QUICK, f"the refusal took {seconds:.0f} s: work started first"


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A folder in which no file can be created, by this user."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    try:
        handle, name = tempfile.mkstemp(dir="/sys")
    except OSError:
        yield Path("/sys")
        return
    os.close(handle)
    os.unlink(name)
    pytest.skip("running as root, and /sys takes files: no folder here refuses them")


@pytest.fixture
def full(tmp_path: Path) -> Path:
    folder = tmp_path / "earlier"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"an earlier model")
    return folder


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "taken"
    path.write_text("something else")
    return path


# -- train verbalized: the issue -------------------------------------------------------------------------------


def test_train_verbalized_refuses_a_folder_that_holds_files_before_training(full: Path) -> None:
    refused(
        *guardrail("train", "verbalized", "--out", full),
        f"--out {full} exists and is not empty; give --force to write into it (files of the same names are replaced)",
    )
    assert [p.name for p in full.iterdir()] == ["model.safetensors"]


def test_train_verbalized_refuses_a_file_before_training(a_file: Path) -> None:
    refused(*guardrail("train", "verbalized", "--out", a_file), f"--out {a_file} is a file, not a folder")
    assert a_file.read_text() == "something else"


def test_train_verbalized_refuses_a_folder_it_cannot_write_before_training(unwritable: Path) -> None:
    code, out, err, seconds = guardrail("train", "verbalized", "--out", unwritable / "model")
    refused(code, out, err, seconds, f"--out {unwritable / 'model'}: {unwritable} is not writable ({_reason(err)})")
    assert _reason(err)  # the system's reason, e.g. "Permission denied"


def test_train_verbalized_refuses_an_artifact_on_too_few_questions_before_training(tmp_path: Path) -> None:
    refused(
        *guardrail("train", "verbalized", "--out", tmp_path / "m", "--calibrate", "5"),
        "--calibrate 5: an artifact needs at least 20 questions (or 0: fit none)",
    )
    assert not (tmp_path / "m").exists()


# -- the other commands ----------------------------------------------------------------------------------------


def test_train_reference_has_no_default_and_refuses_the_shipped_model_without_force() -> None:
    before = {p.name: p.stat().st_mtime_ns for p in reference_model_path().iterdir()}
    code, out, err, _ = guardrail("train", "reference")  # a bare run no longer means the shipped model
    assert code == 2
    assert "Missing option '--out'" in err
    assert "Traceback" not in err + out
    refused(
        *guardrail("train", "reference", "--out", reference_model_path()),
        f"--out {reference_model_path()} is inside the installed guardrail package "
        f"({reference_model_path().parents[1]}), whose shipped files it would replace; choose another folder, or give "
        "--force to write there anyway",
    )
    assert {p.name: p.stat().st_mtime_ns for p in reference_model_path().iterdir()} == before


def test_train_reference_refuses_a_file_and_an_unwritable_folder(a_file: Path, unwritable: Path) -> None:
    refused(*guardrail("train", "reference", "--out", a_file), f"--out {a_file} is a file, not a folder")
    code, out, err, seconds = guardrail("train", "reference", "--out", unwritable / "m")
    refused(code, out, err, seconds, f"--out {unwritable / 'm'}: {unwritable} is not writable ({_reason(err)})")


def test_train_calibration_checks_data_model_and_output_before_loading(tmp_path: Path, full: Path) -> None:
    data = tmp_path / "labelled.jsonl"
    refused(
        *guardrail("train", "grpo", "--model", "m", "--data", data, "--out", tmp_path / "o"),
        f"data {str(data)!r}: no such file (a labelled JSONL file, or easyvqa:SPLIT)",
    )
    refused(
        *guardrail("train", "grpo", "--model", "m", "--data", "easyvqa:tset", "--out", tmp_path / "o"),
        "data 'easyvqa:tset': expected easyvqa:SPLIT or easyvqa:SPLIT:clean, SPLIT one of train, calibration, test",
    )
    refused(
        *guardrail("train", "grpo", "--model", tmp_path, "--data", "easyvqa:test", "--out", tmp_path / "o"),
        f"model {str(tmp_path)!r}: not a model folder (no config.json)",
    )
    model = reference_model_path()
    refused(
        *guardrail("train", "grpo", "--model", model, "--data", "easyvqa:test", "--out", full),
        f"--out {full} exists and is not empty; give --force to write into it (files of the same names are replaced)",
    )
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {model}\ndata: 'easyvqa:test'\noutput: {full}\n")
    refused(
        *guardrail("train", "grpo", "--config", config),
        f"output (in {config}) {full} exists and is not empty; give --force to write into it (files of the same "
        "names are replaced)",
    )


def test_calibrate_refuses_an_existing_artifact_without_force_and_replaces_it_with_force(tmp_path: Path) -> None:
    source = save_artifact(world_artifact(600, seed=3), tmp_path / "source.json")
    out = tmp_path / "calibration.json"
    out.write_text("an earlier artifact")
    refused(*guardrail("calibrate", "--out", out), f"--out {out} exists; give --force to replace it")
    refused(
        *guardrail("calibrate", "--remeasure", source, "--out", out), f"--out {out} exists; give --force to replace it"
    )
    assert out.read_text() == "an earlier artifact"
    code, _, err, _ = guardrail("calibrate", "--remeasure", source, "--out", out, "--force")
    assert code == 0, err
    assert out.read_text().startswith("{")


def test_calibrate_refuses_a_folder_and_an_unwritable_place(tmp_path: Path, unwritable: Path) -> None:
    refused(
        *guardrail("calibrate", "--out", tmp_path),
        f"--out {tmp_path} is a folder; give the name of a file (e.g. {tmp_path / 'calibration.json'})",
    )
    code, out, err, seconds = guardrail("calibrate", "--out", unwritable / "c.json")
    refused(code, out, err, seconds, f"--out {unwritable / 'c.json'}: {unwritable} is not writable ({_reason(err)})")


def test_report_refuses_a_folder_it_cannot_write(tmp_path: Path, unwritable: Path) -> None:
    source = save_artifact(world_artifact(600, seed=3), tmp_path / "source.json")
    code, out, err, seconds = guardrail("report", "--artifact", source, "--out", unwritable / "report")
    refused(code, out, err, seconds, f"--out {unwritable / 'report'}: {unwritable} is not writable ({_reason(err)})")


def test_demo_refuses_a_folder_that_holds_files_and_one_it_cannot_write(full: Path, unwritable: Path) -> None:
    refused(
        *guardrail("demo", "--out", full),
        f"--out {full} exists and is not empty; give --force to write into it (files of the same names are replaced)",
    )
    code, out, err, seconds = guardrail("demo", "--out", unwritable / "demo")
    refused(code, out, err, seconds, f"--out {unwritable / 'demo'}: {unwritable} is not writable ({_reason(err)})")


def _reason(err: str) -> str:
    """The operating system's words in a refusal's last parentheses (they differ between systems)."""
    return err.rstrip("\n").rsplit("(", 1)[-1].removesuffix(")")


# -- after the work: what can still fail is one line too ------------------------------------------------------


def test_a_save_that_fails_after_training_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import guardrail.reference.verbalized as verbalized

    def full_disk(out: Path, config: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(verbalized, "train_verbalized_reference", full_disk)
    result = CliRunner().invoke(app, ["train", "verbalized", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert (
        result.stderr.splitlines()[-1]
        == f"error: cannot save the trained model to {tmp_path / 'm'}: No space left on device"
    )
    assert not isinstance(result.exception, OSError)


def test_an_artifact_that_cannot_be_fitted_after_training_names_the_saved_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import guardrail.pretrained as pretrained
    import guardrail.reference.verbalized as verbalized

    out = tmp_path / "m"
    out.mkdir()
    (out / "guardrail_calibration.json").write_text("an earlier model's artifact")

    def trained(folder: Path, config: object) -> Path:
        (folder / "model.safetensors").write_bytes(b"weights")
        return folder

    def refused(*args: object, **kwargs: object) -> object:
        raise CalibrationError("cannot calibrate on this data: reasoning has 0 wrong answers")

    monkeypatch.setattr(verbalized, "train_verbalized_reference", trained)
    monkeypatch.setattr(pretrained, "calibrate_model", refused)
    result = CliRunner().invoke(app, ["train", "verbalized", "--out", str(out), "--force", "--calibrate", "20"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: cannot calibrate on this data: reasoning has 0 wrong answers; the trained model is saved in {out} "
        f"without an artifact (fit one with `guardrail calibrate --model {out} --out "
        f"{out / 'guardrail_calibration.json'}`)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]  # the earlier artifact is gone
