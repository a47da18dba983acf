"""Labelled items from JSONL files and from easy-VQA under corruptions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from guardrail import InputError
from guardrail.data.labelled import easyvqa_items, read_jsonl


def write(tmp_path: Path, lines: list[str]) -> Path:
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_items_with_relative_images_and_perception(tmp_path: Path) -> None:
    line = {"image": "ok.png", "question": "What colour?", "answer": "red", "perception": "Red Circle"}
    items = read_jsonl(write(tmp_path, [json.dumps(line), ""]))
    assert len(items) == 1
    assert items[0].perception == ("red", "circle")
    assert items[0].request.question == "What colour?"
    assert len(items[0].request.images) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", ":1: not valid JSON"),
        ("[1, 2]", ":1: expected a JSON object"),
        ('{"image": "ok.png", "question": "q"}', ":1: 'answer' must be a non-empty string"),
        ('{"image": "ok.png", "question": "q", "answer": "a", "colour": 1}', ":1: unknown key(s) ['colour']"),
        ('{"image": "ok.png", "question": "q", "answer": "a", "perception": 3}', ":1: 'perception' must be a string"),
        ('{"image": "missing.png", "question": "q", "answer": "a"}', "missing.png: no such file"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        read_jsonl(write(tmp_path, [line]))
    assert message in str(info.value)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(InputError, match="no labelled items"):
        read_jsonl(path)


def test_easyvqa_items_are_seeded_and_corrupted() -> None:
    first = easyvqa_items("test", limit=40, seed=3)
    again = easyvqa_items("test", limit=40, seed=3)
    assert [i.request for i in first] == [i.request for i in again]
    assert len(first) == 40
    assert {i.tags["severity"] for i in first} > {"0"}
    assert all(i.perception is not None and len(i.perception) == 2 for i in first)
    clean = easyvqa_items("test", limit=40, seed=3, corruptions=())
    assert {i.tags["corruption"] for i in clean} == {"none"}
    assert [i.request.question for i in clean] == [i.request.question for i in first]
