"""``guardrail report``: writes the page from a saved artifact; a bad artifact is one line and exit code 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrail.calibration import save_artifact
from guardrail.calibration.artifact import _checksum
from guardrail.cli import _register, app
from tests.support.calibration import world_artifact


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_artifact(world_artifact(600, seed=3), tmp_path_factory.mktemp("artifact") / "calibration.json")


def invoke(*args: str) -> tuple[int, str, str]:
    _register()
    result = CliRunner().invoke(app, ["report", *args])
    return result.exit_code, result.stdout, result.stderr


def test_writes_the_report_and_says_where(saved: Path, tmp_path: Path) -> None:
    code, out, err = invoke("--artifact", str(saved), "--out", str(tmp_path / "report"))
    assert code == 0, err
    assert out == f"report written to {tmp_path / 'report' / 'index.html'}\n"
    assert err == ""
    written = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"index.html", "metrics.json", "reliability-overall.png", "risk-coverage-visual.png"} <= written
    assert len([n for n in written if n.endswith(".png")]) == 6


def without_evaluation(path: Path) -> None:
    data = json.loads(path.read_text())
    del data["evaluation"], data["checksum"]
    data["checksum"] = _checksum(data)
    path.write_text(json.dumps(data))


def test_an_older_artifact_without_held_out_scores_gives_a_page_without_plots(saved: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(saved.read_text())
    without_evaluation(old)
    code, out, err = invoke("--artifact", str(old), "--out", str(tmp_path / "report"))
    assert code == 0
    assert out.startswith("report written to ")
    assert "no held-out scores" in err
    assert "Plots unavailable" in (tmp_path / "report" / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.unlink(), "cannot read artifact"),
        (lambda p: p.write_text(p.read_text()[:100]), "is truncated"),
        (lambda p: p.write_text(p.read_text().replace('"version": 1', '"version": 9')), "has version 9"),
        (lambda p: p.write_text(p.read_text().replace('"n": 600', '"n": 601')), "checksum mismatch"),
        (lambda p: p.write_text('{"schema": "something else"}'), "is not a guardrail calibration artifact"),
    ],
)
def test_a_bad_artifact_is_one_line_and_exit_code_2(
    saved: Path, tmp_path: Path, damage: Callable[[Path], object], message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(saved.read_text())
    damage(bad)
    code, out, err = invoke("--artifact", str(bad), "--out", str(tmp_path / "report"))
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "report").exists()


def test_an_output_folder_that_cannot_be_made_is_exit_code_2(saved: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = invoke("--artifact", str(saved), "--out", str(blocker / "report"))
    assert code == 2
    assert err == f"error: --out {blocker / 'report'}: cannot be created, {blocker} is a file\n"


def test_a_folder_that_holds_files_is_written_into_only_with_force(saved: Path, tmp_path: Path) -> None:
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    code, out, err = invoke("--artifact", str(saved), "--out", str(folder))
    assert code == 2
    assert out == ""
    assert err == (
        f"error: --out {folder} exists and is not empty; give --force to write into it (files of the same names are "
        "replaced)\n"
    )
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    code, out, err = invoke("--artifact", str(saved), "--out", str(folder), "--force")
    assert code == 0, err
    assert (folder / "index.html").is_file()
    assert (folder / "notes.txt").read_text() == "mine"


def test_both_options_are_required() -> None:
    code, _, err = invoke("--out", "somewhere")
    assert code == 2
    assert "--artifact" in err
