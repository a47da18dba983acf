"""Loading a model folder (``backends/transformers/_loading.py``): the classes the folder names, as the Auto classes
would pick them, and the Auto classes' own error for a folder that names no vision-language model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrail import BackendError
from guardrail.backends.transformers import TransformersBackend
from guardrail.backends.transformers._loading import _model_class, _named_class, _transformers_class
from guardrail.reference import reference_model_path
from tests.support.tiny_vlms import BUILDERS


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_the_model_class_is_the_one_the_auto_class_picks(family: str, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    model, _ = BUILDERS[family]()
    model.save_pretrained(tmp_path)
    by_auto = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True)
    assert _model_class(tmp_path / "config.json") is type(by_auto)


def test_the_reference_model_names_its_classes() -> None:
    folder = reference_model_path()
    assert _model_class(folder / "config.json").__name__ == "LlavaForConditionalGeneration"
    assert _named_class(folder / "processor_config.json", "processor_class").__name__ == "LlavaProcessor"


def test_a_folder_naming_no_vision_language_model_gets_the_auto_class_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert _model_class(tmp_path / "config.json") is None  # a text-only type: the Auto class decides, and refuses
    with pytest.raises(BackendError, match="cannot load a vision-language model"):
        TransformersBackend.from_pretrained(tmp_path)


@pytest.mark.parametrize("named", [None, 3, "", "not a name", "NoSuchClass", "logging"])
def test_only_a_class_with_from_pretrained_is_named(named: object) -> None:
    assert _transformers_class(named) is None


def test_a_missing_or_broken_config_names_nothing(tmp_path: Path) -> None:
    assert _model_class(tmp_path / "config.json") is None
    (tmp_path / "config.json").write_text("[1, 2")
    assert _model_class(tmp_path / "config.json") is None
    (tmp_path / "config.json").write_text("[1, 2]")  # JSON, but no object
    assert _named_class(tmp_path / "config.json", "processor_class") is None
