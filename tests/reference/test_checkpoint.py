"""The reference checkpoint under the canonical LLaVA names: what vLLM reads, what transformers reads, and the proof
that renaming the weights changed no weight, no output and nothing the calibration was fitted on.

Weights (names and bytes), answers and token ids must be identical; log-probs of two loads equal within
``MODEL_OUTPUT_TOLERANCE`` (issue 26: on an AMD EPYC one differed in the 7th digit between two loads of the same
weights, and the migration refused to run)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from safetensors import safe_open

from guardrail import Generation
from guardrail.backends.base import MODEL_OUTPUT_TOLERANCE
from guardrail.calibration.artifact import fingerprint_model, load_artifact, save_artifact
from guardrail.errors import ArtifactError
from guardrail.pretrained import ARTIFACT_FILENAME
from guardrail.reference import reference_model_path
from guardrail.reference.checkpoint import (
    WEIGHTS_FILE,
    answers_differ,
    canonical_name,
    canonicalize_checkpoint,
    loaded_weights,
    main,
    outputs_differ,
    rebind_artifact,
    weights_differ,
)


def _names(folder: Path) -> list[str]:
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as handle:
        return list(handle.keys())


def _transformers_saved(tmp_path: Path) -> Path:
    """The shipped model as transformers 5 saves a model it built (``train_reference`` builds from a config): the
    vision tower without ``vision_model.``. (A model loaded from a checkpoint is saved under that checkpoint's
    names: transformers reverts the renamings it applied on load.)"""
    import transformers

    auto: Any = transformers  # the Auto classes are untyped
    folder = tmp_path / "as-saved"
    shutil.copytree(reference_model_path(), folder)
    (folder / WEIGHTS_FILE).unlink()
    loaded = auto.AutoModelForImageTextToText.from_pretrained(reference_model_path())
    built = auto.AutoModelForImageTextToText.from_config(auto.AutoConfig.from_pretrained(reference_model_path()))
    built.load_state_dict(loaded.state_dict())
    built.save_pretrained(folder)
    for name in ("config.json", "generation_config.json"):  # only the weights as transformers writes them
        shutil.copy2(reference_model_path() / name, folder / name)
    return folder


def test_canonical_names() -> None:
    assert canonical_name("vision_tower.encoder.layers.0.mlp.fc1.weight") == (
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"
    )
    for kept in ("vision_tower.vision_model.post_layernorm.bias", "language_model.model.norm.weight"):
        assert canonical_name(kept) == kept
    assert canonical_name("multi_modal_projector.linear_1.weight") == "multi_modal_projector.linear_1.weight"


def test_the_shipped_checkpoint_has_the_canonical_names_and_loads_cleanly() -> None:
    names = _names(reference_model_path())
    assert all(canonical_name(n) == n for n in names)
    assert any(n.startswith("vision_tower.vision_model.encoder.") for n in names)  # what vLLM's CLIP tower reads
    assert any(n.startswith("language_model.model.layers.") for n in names)
    assert loaded_weights(reference_model_path())  # no missing, unexpected or mismatched weight


def test_renaming_what_transformers_saves_keeps_every_weight_and_output(tmp_path: Path) -> None:
    saved = _transformers_saved(tmp_path)
    assert any(n.startswith("vision_tower.encoder.") for n in _names(saved))  # transformers 5 drops the prefix
    before = loaded_weights(saved)
    renamed = canonicalize_checkpoint(saved)
    assert renamed
    assert all(new == canonical_name(old) != old for old, new in renamed)
    assert sorted(_names(saved)) == sorted(_names(reference_model_path()))
    assert weights_differ(before, loaded_weights(saved)) == []
    assert weights_differ(loaded_weights(saved), loaded_weights(reference_model_path())) == []
    assert outputs_differ(saved, reference_model_path(), questions=2) == []
    assert canonicalize_checkpoint(saved) == []  # canonical already: untouched


def test_differences_are_found() -> None:
    import torch

    left = {"a": torch.zeros(2), "b": torch.ones(2)}
    assert weights_differ(left, {"a": torch.zeros(2), "b": torch.ones(2)}) == []
    assert weights_differ(left, {"a": torch.zeros(2)}) == ["only in one: b"]
    assert weights_differ(left, {"a": torch.zeros(2), "b": torch.tensor([1.0, 1.0 + 2**-20])}) == [
        "not bit-identical: b"
    ]
    assert weights_differ({"z": torch.tensor([0.0])}, {"z": torch.tensor([-0.0])}) == ["not bit-identical: z"]


def test_answers_must_be_identical_and_log_probs_within_the_tolerance() -> None:
    def answer(
        text: str = r"\boxed{triangle}", ids: tuple[int, ...] = (7, 8), first: float = -0.05502515658736229
    ) -> Generation:
        return Generation(text=text, token_ids=ids, token_logprobs=(first, -0.0023))

    questions = ["what is the red shape?"]
    assert answers_differ(questions, [answer()], [answer()]) == []
    # issue 26: the same weights loaded twice on an AMD EPYC, one log-prob 1.2e-7 apart
    assert answers_differ(questions, [answer()], [answer(first=-0.05502504110336304)]) == []
    edge = -0.05502515658736229 + 0.9 * MODEL_OUTPUT_TOLERANCE.allowed(-0.055, -0.055)
    assert answers_differ(questions, [answer()], [answer(first=edge)]) == []
    (far,) = answers_differ(questions, [answer()], [answer(first=-0.0551)])
    assert far.startswith("question 0 ('what is the red shape?'): ")
    assert "log-probs differ beyond 1e-05 absolute + 0.0001 relative at token 0 (" in far
    (other,) = answers_differ(questions, [answer()], [answer(text=r"\boxed{circle}")])
    assert "another answer" in other
    (other_ids,) = answers_differ(questions, [answer()], [answer(ids=(7, 9))])  # the same text, other tokens
    assert "another answer" in other_ids


def test_only_a_llava_with_a_clip_tower_is_renamed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_vl", "vision_config": {}}')
    with pytest.raises(ValueError, match="not a LLaVA with a CLIP vision tower"):
        canonicalize_checkpoint(tmp_path)


def test_the_shipped_artifact_is_bound_to_the_renamed_checkpoint() -> None:
    """Refitted on the checkpoint under its canonical names (issue 28), the shipped artifact needs no rebinding note;
    an artifact the migration rebound says so (``test_the_migration_renames_verifies_and_rebinds``)."""
    folder = reference_model_path()
    artifact = load_artifact(folder / ARTIFACT_FILENAME, expected_model_fingerprint=fingerprint_model(folder))
    assert all(not n.startswith("vision_tower.") or n.startswith("vision_tower.vision_model.") for n in _names(folder))
    note = artifact.info.get("checkpoint_renamed")
    if note is None:
        assert artifact.info["command"].startswith("guardrail calibrate")
    else:
        assert note["from_model_fingerprint"] != artifact.model_fingerprint
        assert "not refitted" in note["what"]


def test_the_migration_renames_verifies_and_rebinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = _transformers_saved(tmp_path)
    old = fingerprint_model(saved)
    artifact = load_artifact(saved / ARTIFACT_FILENAME)
    info = {k: v for k, v in artifact.info.items() if k != "checkpoint_renamed"}
    save_artifact(artifact.model_copy(update={"model_fingerprint": old, "info": info}), saved / ARTIFACT_FILENAME)

    assert main([str(saved)]) == 0
    new = fingerprint_model(saved)
    assert new == fingerprint_model(reference_model_path())  # byte for byte the shipped file
    rebound = load_artifact(saved / ARTIFACT_FILENAME, expected_model_fingerprint=new)
    assert rebound.info["checkpoint_renamed"]["from_model_fingerprint"] == old
    assert rebound.calibrator == artifact.calibrator  # not refitted
    assert rebound.created == artifact.created
    out = capsys.readouterr().out
    assert "bit-identical weights" in out
    assert f"log-probs within {MODEL_OUTPUT_TOLERANCE}" in out
    assert "within 1e-05 absolute" in rebound.info["checkpoint_renamed"]["verified"]

    assert main([str(saved)]) == 0  # again: nothing to do
    assert "canonical already" in capsys.readouterr().out


def test_an_artifact_of_another_model_is_not_rebound(tmp_path: Path) -> None:
    path = tmp_path / ARTIFACT_FILENAME
    shutil.copy2(reference_model_path() / ARTIFACT_FILENAME, path)
    with pytest.raises(ArtifactError, match="neither the checkpoint before renaming"):
        rebind_artifact(path, old="sha256:aa", new="sha256:bb", note={})
    assert path.read_bytes() == (reference_model_path() / ARTIFACT_FILENAME).read_bytes()
