"""The reference checkpoint under the weight names every LLaVA reader knows, and the proof that renaming changed
nothing.

transformers 5 builds a LLaVA's CLIP vision tower as a ``CLIPVisionModel`` without its former ``vision_model``
submodule, and its ``save_pretrained`` writes the tower's weights without that prefix (``vision_tower.encoder.*``).
The LLaVA checkpoints on the Hub (``llava-hf/*``) and other engines keep it (``vision_tower.vision_model.*``):
vLLM's LLaVA loader (``vllm/model_executor/models/llava.py``, whose vision tower is ``clip.py``'s
``CLIPVisionModel`` with a ``vision_model`` submodule) reads only those names and refuses the others. transformers
reads both: its conversion mapping removes the prefix on load (``"CLIPVisionModel":
[PrefixChange(prefix_to_remove="vision_model")]`` in ``transformers/conversion_mapping.py``). So the reference
model is saved under the canonical names: ``language_model.model.*``, ``multi_modal_projector.*`` (as transformers
writes them) and ``vision_tower.vision_model.*``; the tied ``lm_head`` is not stored.

:func:`canonicalize_checkpoint` renames the keys of a saved folder's ``model.safetensors`` in place, tensors
untouched (``train_reference`` calls it after ``save_pretrained``). Renaming changes the file's bytes and therefore
the model fingerprint a calibration artifact is bound to (``calibration/artifact.py``), though not one weight
changes. ``python -m guardrail.reference.checkpoint [FOLDER]`` renames a folder written before, proves that
transformers loads bit-identical weights from both files and that both give the same greedy answers (the same text
and token ids; their token log-probs equal within ``MODEL_OUTPUT_TOLERANCE``, since two loads of the same weights
need not compute bit-identical floats), and only then binds the artifact beside the model to the renamed file,
recording what was done in its ``info["checkpoint_renamed"]``; the calibration itself is not refitted (the model it
was fitted on is the same model).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._paths import recorded_command
from ..backends.base import MODEL_OUTPUT_TOLERANCE, FloatTolerance

if TYPE_CHECKING:
    from ..types import Generation

__all__ = [
    "WEIGHTS_FILE",
    "answers_differ",
    "canonical_name",
    "canonicalize_checkpoint",
    "loaded_weights",
    "outputs_differ",
    "rebind_artifact",
    "weights_differ",
]

WEIGHTS_FILE = "model.safetensors"
QUESTIONS = 8
"""Easy-VQA test questions on which ``main`` compares the answers of the checkpoint before and after renaming."""
_TOWER, _INNER = "vision_tower.", "vision_model."


def canonical_name(key: str) -> str:
    """``key`` under the canonical LLaVA names: ``vision_tower.X`` becomes ``vision_tower.vision_model.X``."""
    if key.startswith(_TOWER) and not key.startswith(_TOWER + _INNER):
        return _TOWER + _INNER + key[len(_TOWER) :]
    return key


def _check_llava_clip(folder: Path) -> None:
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: cannot read config.json ({exc})") from exc
    vision = config.get("vision_config") or {}
    if config.get("model_type") != "llava" or vision.get("model_type") != "clip_vision_model":
        raise ValueError(
            f"{folder}: not a LLaVA with a CLIP vision tower (model_type {config.get('model_type')!r}, vision "
            f"{vision.get('model_type')!r}); only that layout's names are known here"
        )


def canonicalize_checkpoint(folder: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Rename the keys of ``folder/model.safetensors`` to :func:`canonical_name`, in place and atomically.

    The tensors and the file's metadata are written back unchanged. Returns the ``(old, new)`` pairs renamed (empty
    when the names are canonical already, and then the file is not touched). Only a single-file LLaVA with a CLIP
    vision tower is accepted.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    root = Path(folder)
    _check_llava_clip(root)
    path = root / WEIGHTS_FILE
    if not path.is_file():
        raise ValueError(f"{root}: no {WEIGHTS_FILE} (sharded checkpoints are not handled)")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        keys = list(handle.keys())
        tensors = {canonical_name(key): handle.get_tensor(key) for key in keys}
    renamed = [(key, canonical_name(key)) for key in keys if canonical_name(key) != key]
    if not renamed:
        return []
    if len(tensors) != len(keys):
        raise ValueError(f"{path}: renaming would give two tensors one name")
    temporary = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, path)
    return renamed


def loaded_weights(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The state dict transformers loads from ``folder`` (fails on any missing, unexpected or mismatched key)."""
    import transformers

    auto: Any = transformers  # the Auto classes are untyped
    model, info = auto.AutoModelForImageTextToText.from_pretrained(str(folder), output_loading_info=True)
    problems = {k: sorted(v) for k, v in info.items() if v}
    if problems:
        raise ValueError(f"{folder}: transformers did not load every weight cleanly: {problems}")
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def weights_differ(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[str]:
    """What differs between two state dicts: names present in one only, or tensors not bit-identical."""
    import torch

    problems = [f"only in one: {key}" for key in sorted(set(left) ^ set(right))]
    for key in sorted(set(left) & set(right)):
        a, b = left[key], right[key]
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a.view(torch.uint8), b.view(torch.uint8)):
            problems.append(f"not bit-identical: {key}")
    return problems


def answers_differ(
    questions: Sequence[str],
    left: Sequence[Generation],
    right: Sequence[Generation],
    *,
    tolerance: FloatTolerance = MODEL_OUTPUT_TOLERANCE,
) -> list[str]:
    """What differs between two models' answers to the same questions (empty: nothing): the text and the token ids
    compared exactly, each token's log-prob within ``tolerance`` (floats of two loads need not be bit-identical)."""
    problems = []
    for i, (question, a, b) in enumerate(zip(questions, left, right, strict=True)):
        where = f"question {i} ({question!r})"
        if a.text != b.text or a.token_ids != b.token_ids:
            problems.append(
                f"{where}: another answer, {a.text!r} {list(a.token_ids)} != {b.text!r} {list(b.token_ids)}"
            )
        elif len(a.token_logprobs) != len(b.token_logprobs):
            problems.append(f"{where}: {len(a.token_logprobs)} token log-probs != {len(b.token_logprobs)}")
        else:
            far = [
                f"token {j} ({x!r} != {y!r}, by {abs(x - y):.3g})"
                for j, (x, y) in enumerate(zip(a.token_logprobs, b.token_logprobs, strict=True))
                if not tolerance.close(x, y)
            ]
            if far:
                problems.append(f"{where}: {a.text!r}, log-probs differ beyond {tolerance} at " + ", ".join(far))
    return problems


def outputs_differ(left: str | os.PathLike[str], right: str | os.PathLike[str], *, questions: int = 8) -> list[str]:
    """Greedy answers of two model folders on easy-VQA test questions, compared by :func:`answers_differ`: text
    and token ids exactly, token log-probs within ``MODEL_OUTPUT_TOLERANCE``; what differs (empty: nothing)."""
    from ..backends.transformers import TransformersBackend
    from ..data.easyvqa import load_easyvqa
    from ..types import Request

    examples = load_easyvqa("test")[:questions]
    answers = []
    for folder in (left, right):
        backend = TransformersBackend.from_pretrained(str(folder), device="cpu", max_new_tokens=48)
        answers.append([backend.generate(Request.from_question(e.question, [e.image()])) for e in examples])
    return answers_differ([e.question for e in examples], *answers)


def rebind_artifact(artifact_path: Path, *, old: str, new: str, note: Mapping[str, Any]) -> bool:
    """Bind the artifact at ``artifact_path`` from model fingerprint ``old`` to ``new`` (same weights, renamed),
    keeping ``note`` in ``info["checkpoint_renamed"]``; saved with a fresh checksum. ``False`` when it is bound to
    ``new`` already; an artifact bound to a third model is refused."""
    from ..calibration.artifact import load_artifact, save_artifact
    from ..errors import ArtifactError

    artifact = load_artifact(artifact_path)
    if artifact.model_fingerprint == new:
        return False
    if artifact.model_fingerprint != old:
        raise ArtifactError(
            f"artifact {artifact_path} is bound to {artifact.model_fingerprint}, neither the checkpoint before "
            f"renaming ({old}) nor after ({new}): not touched"
        )
    info = {**artifact.info, "checkpoint_renamed": dict(note)}
    save_artifact(artifact.model_copy(update={"model_fingerprint": new, "info": info}), artifact_path)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Rename a model folder's checkpoint to the canonical names, verify, and rebind its artifact (see above)."""
    from .._version import __version__
    from ..calibration.artifact import fingerprint_model
    from . import reference_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", nargs="?", type=Path, default=reference_model_path())
    parser.add_argument("--artifact", default="guardrail_calibration.json", help="file name beside the model")
    args = parser.parse_args(argv)
    folder: Path = args.folder
    old = fingerprint_model(folder)
    with tempfile.TemporaryDirectory(prefix="guardrail-checkpoint-") as scratch:
        before = Path(scratch) / "before"
        shutil.copytree(folder, before, ignore=shutil.ignore_patterns(args.artifact))
        renamed = canonicalize_checkpoint(folder)
        if not renamed:
            print(f"{folder / WEIGHTS_FILE}: the names are canonical already")
        else:
            problems = weights_differ(loaded_weights(before), loaded_weights(folder))
            problems += outputs_differ(before, folder, questions=QUESTIONS)
            if problems:
                shutil.copy2(before / WEIGHTS_FILE, folder / WEIGHTS_FILE)
                print("renaming changed the model, the checkpoint is restored:\n  " + "\n  ".join(problems))
                return 1
            print(f"renamed {len(renamed)} keys (e.g. {renamed[0][0]} -> {renamed[0][1]}); transformers loads "
                  "bit-identical weights and gives the same greedy answers (text and token ids identical, log-probs "
                  f"within {MODEL_OUTPUT_TOLERANCE})")  # fmt: skip
    new = fingerprint_model(folder)
    artifact_path = folder / args.artifact
    if artifact_path.is_file():
        note = {
            "from_model_fingerprint": old,
            "keys_renamed": len(renamed),
            "what": "weight names made canonical (vision_tower.* -> vision_tower.vision_model.*) so that vLLM loads "
            "the folder; every tensor unchanged, the calibration not refitted",
            "verified": "transformers loads bit-identical state dicts from the files before and after, and greedy "
            f"answers on {QUESTIONS} easy-VQA test questions have identical text and token ids and token log-probs "
            f"equal within {MODEL_OUTPUT_TOLERANCE}",
            "command": recorded_command(["python", "-m", "guardrail.reference.checkpoint", *sys.argv[1:]]),
            "guardrail_version": __version__,
        }
        if rebind_artifact(artifact_path, old=old, new=new, note=note):
            print(f"{artifact_path}: model fingerprint {old} -> {new}")
        else:
            print(f"{artifact_path}: bound to this checkpoint already")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
