"""Paths recorded in results and artifacts are relative to the repository: no file the project ships names a path of
the machine it was made on (``guardrail._paths``), and the writers record new paths the same way."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardrail._paths import REPOSITORY, recorded_command, recorded_path

ROOT = Path(__file__).resolve().parents[1]
RECORDED = sorted(
    [
        *(ROOT / "bench" / "results").glob("*.json"),
        *(ROOT / "guardrail" / "reference").glob("*/guardrail_calibration.json"),
        *(ROOT / "guardrail" / "reference").glob("*/training_config.json"),
    ]
)
"""Every results file, and the JSON records shipped in the model folders (calibration artifacts, training records)."""

# An absolute path: at the start of a string or after a space, '=' or quote (a command line), a '/' followed by a
# name and another '/' ("/work/x", "/home/me/..."), or a Windows drive ("C:\\...").
_ABSOLUTE = re.compile(r"""(?:^|[\s='"])(/[\w.-]+/|[A-Za-z]:\\)""")


def _strings(value: object, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")
    elif isinstance(value, str):
        yield where, value


def test_there_are_recorded_files_to_check() -> None:
    names = {path.name for path in RECORDED}
    assert {"vl_calibration.json", "guardrail_calibration.json", "training_config.json"} <= names


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_recorded_file_names_an_absolute_path(path: Path) -> None:
    absolute = [
        f"{where}: {text[:120]!r}"
        for where, text in _strings(json.loads(path.read_text(encoding="utf-8")), "$")
        if _ABSOLUTE.search(text)
    ]
    assert not absolute, f"{path.relative_to(ROOT)} records absolute paths:\n" + "\n".join(absolute[:20])


def test_the_scan_finds_the_paths_it_is_for() -> None:
    found = [
        "/work/main/guardrail/reference/model",
        "OMP_NUM_THREADS=1 /home/me/.venv/bin/python bench/x.py",
        "guardrail calibrate --out=/tmp/a/b.json",
        "C:\\Users\\me\\model",
    ]
    kept = ["guardrail/reference/model", "a/b ratio", "ECE 0.02 / AURC", "easy-vqa:calibration:n=3000", "s / 2"]
    assert all(_ABSOLUTE.search(text) for text in found)
    assert not any(_ABSOLUTE.search(text) for text in kept)


def test_a_path_in_the_repository_is_recorded_relative_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert REPOSITORY == ROOT
    assert recorded_path(ROOT / "guardrail" / "reference" / "model") == "guardrail/reference/model"
    assert recorded_path(str(ROOT / "bench" / "results" / "x.json")) == "bench/results/x.json"
    assert recorded_path(ROOT) == "."
    assert recorded_path(tmp_path / "model") == str(tmp_path / "model")  # outside: as given
    assert recorded_path(tmp_path / "m", root=tmp_path) == "m"  # a model folder as the root
    monkeypatch.chdir(ROOT)
    assert recorded_path("guardrail/reference/model") == "guardrail/reference/model"
    monkeypatch.chdir(tmp_path)
    assert recorded_path("model") == "model"  # relative, outside the repository: as given


def test_a_link_into_the_repository_is_recorded_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "checkout").symlink_to(ROOT, target_is_directory=True)
    assert recorded_path(tmp_path / "checkout" / "guardrail") == "guardrail"


def test_a_command_records_its_paths_relative_and_its_other_words_unchanged(tmp_path: Path) -> None:
    words = [
        "guardrail",
        "calibrate",
        "--out",
        str(ROOT / "guardrail" / "reference" / "model" / "guardrail_calibration.json"),
        f"--data={ROOT / 'd.jsonl'}",
        f"--model={tmp_path / 'm'}",
        "--seed",
        "0",
        "a b",
    ]
    assert recorded_command(words) == (
        "guardrail calibrate --out guardrail/reference/model/guardrail_calibration.json --data=d.jsonl "
        f"--model={tmp_path / 'm'} --seed 0 'a b'"
    )
