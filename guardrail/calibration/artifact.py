"""The calibration artifact: everything fitted on a calibration set, in one versioned JSON file.

It holds the fitted :class:`DecoupledCalibrator`, the visual normalisation statistics (mean and std of the raw
visual score s, METHOD.md section 3 step 6), the certified thresholds (section 7), the metrics at fit time
(section 6), and sha256 fingerprints of the model and the data it was fitted on. A calibration is only valid
for the model it was fitted on: :func:`load_artifact` refuses another model when told which one to expect.

Optionally (``evaluation``, filled by :func:`guardrail.calibration.fit_artifact`) it also keeps, per component,
the calibrated confidences and 0/1 labels of the held-out rows the metrics were measured on, rounded to 6
decimals: summary numbers alone cannot be drawn, and ``guardrail report`` draws reliability diagrams and
risk-coverage curves from these. The field is optional, so artifacts written before it existed still load (the
version stays 1), and a file without it is written without the key, as before.

:func:`load_artifact` turns every way a file can be wrong into an :class:`guardrail.ArtifactError` that names the
file and the problem: unreadable, empty or truncated, not JSON, not an artifact (``schema``), another
``version``, missing or invalid fields, edited after saving (``checksum``), an unusable calibrator, or a model
fingerprint mismatch. A guard configured with a bad artifact therefore fails at load time: closed.

A model reached only through an API has no files to fingerprint: an artifact fitted on its black-box signals
(``guardrail calibrate --base-url URL --model NAME``) is bound to the served model's id instead
(:func:`served_model_fingerprint`, ``served:NAME``; the base URL is recorded in ``info["served"]``, not bound, since
one model may be reached at several addresses), and records the black-box estimator's settings in
``info["blackbox"]`` (:attr:`CalibrationArtifact.blackbox_setting`). Such an artifact and a white-box one never
stand in for each other: the features their calibrators learnt differ.

File layout (top-level keys)::

    {"schema": "guardrail.calibration", "version": 1, "created": "2026-...Z",
     "model_fingerprint": "sha256:...", "data_fingerprint": "sha256:...",
     "calibrator": {...}, "visual_normalization": {"mean": ..., "std": ...},
     "thresholds": [...], "metrics": {"overall": {...}, ...}, "info": {...},
     "evaluation": {"overall": {"confidence": [0.912345, ...], "correct": [1, ...]}, ...},  # optional
     "checksum": "sha256:..."}
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..confidence.familiarity import FamiliarityReference, FeatureKind
from ..confidence.normalization import VisualNormalization
from ..confidence.settings import BlackBoxSetting, EstimatorSetting, parse_blackbox_info, parse_estimator_info
from ..errors import ArtifactError, CalibrationError
from .decoupled import DecoupledCalibrator
from .risk import CertifiedThreshold
from .summary import CalibrationSummary

__all__ = [
    "ARTIFACT_SCHEMA",
    "ARTIFACT_VERSION",
    "CalibrationArtifact",
    "HeldOutScores",
    "fingerprint_data",
    "fingerprint_model",
    "load_artifact",
    "save_artifact",
    "served_model_fingerprint",
]

ARTIFACT_SCHEMA = "guardrail.calibration"
ARTIFACT_VERSION = 1
SERVED_PREFIX = "served:"
"""The model fingerprint of a served model: its id after this prefix (no files to hash)."""

_MODEL_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.json",
        "chat_template.jinja",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
    }
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".safetensors.index.json", ".bin.index.json")


class HeldOutScores(BaseModel):
    """One component's calibrated confidences and 0/1 labels on held-out rows (what its metrics were measured on).

    Kept so that plots (reliability diagram, risk-coverage curve) can be drawn from the artifact alone. Build with
    :meth:`from_arrays`, which rounds confidences to ``decimals`` places to keep files small.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    confidence: tuple[float, ...]
    correct: tuple[int, ...]

    @model_validator(mode="after")
    def _consistent(self) -> HeldOutScores:
        if len(self.confidence) != len(self.correct):
            raise ValueError(
                f"confidence and correct must have the same length, got {len(self.confidence)} and {len(self.correct)}"
            )
        if not self.confidence:
            raise ValueError("confidence and correct must not be empty")
        bad = next((c for c in self.confidence if not 0.0 <= c <= 1.0), None)  # NaN fails the comparison too
        if bad is not None:
            raise ValueError(f"confidence must hold probabilities in [0, 1], got {bad!r}")
        wrong = next((y for y in self.correct if y not in (0, 1)), None)
        if wrong is not None:
            raise ValueError(f"correct must hold 0/1 labels, got {wrong!r}")
        return self

    @classmethod
    def from_arrays(cls, confidence: Iterable[float], correct: Iterable[float], *, decimals: int = 6) -> HeldOutScores:
        """Confidences rounded to ``decimals`` places and labels as ints (0/1)."""
        return cls(
            confidence=tuple(round(float(c), decimals) for c in confidence),
            correct=tuple(int(y) for y in correct),
        )


class CalibrationArtifact(BaseModel):
    """What one calibration run produced; build with :meth:`create`, save and load with the module functions."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_id: str = Field(default=ARTIFACT_SCHEMA, alias="schema")
    version: int = ARTIFACT_VERSION
    created: str
    model_fingerprint: str
    data_fingerprint: str
    calibrator: dict[str, Any]
    """``DecoupledCalibrator.to_dict()``."""
    visual_normalization: VisualNormalization | None
    thresholds: tuple[CertifiedThreshold, ...] = ()
    metrics: dict[str, CalibrationSummary] = Field(default_factory=dict)
    """Metrics at fit time, by component (``visual``, ``reasoning``, ``overall``, ...)."""
    info: dict[str, Any] = Field(default_factory=dict)
    """Provenance (split name, sizes, command line); plain JSON values. Free-form but for ``info["estimator"]``,
    the probe setting the artifact was fitted under, checked when the artifact is built (see
    :attr:`estimator_setting`)."""
    evaluation: dict[str, HeldOutScores] | None = None
    """Held-out calibrated confidences and labels by component (as ``metrics``), for plots; None in older files."""
    familiarity: FamiliarityReference | None = None
    """Where the calibration inputs' features lie (question and images): what an input's familiarity and shift
    covariates are measured against; None in older files. Its ``features`` says which kind, the model's own
    (in process) or the client's (``confidence.client_features``: served and hosted models too), one for all
    sides; see :attr:`familiarity_features`."""

    _estimator_setting: EstimatorSetting = PrivateAttr(default_factory=EstimatorSetting)
    _blackbox_setting: BlackBoxSetting | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _estimator_setting_parses(self) -> CalibrationArtifact:
        self._estimator_setting = parse_estimator_info(self.info.get("estimator"))
        self._blackbox_setting = parse_blackbox_info(self.info.get("blackbox"))
        return self

    @property
    def blackbox_setting(self) -> BlackBoxSetting | None:
        """The black-box estimator's settings the calibrators were fitted under (``info["blackbox"]``), or ``None``
        for an artifact fitted on a model's white-box signals."""
        return self._blackbox_setting

    @property
    def served_model(self) -> str | None:
        """The served model id this artifact is bound to (``served:NAME`` fingerprint), or ``None``."""
        fingerprint = self.model_fingerprint
        return fingerprint.removeprefix(SERVED_PREFIX) if fingerprint.startswith(SERVED_PREFIX) else None

    @property
    def estimator_setting(self) -> EstimatorSetting:
        """The probe setting and K the normalisation and calibrators were fitted under (``info["estimator"]``,
        parsed once when the artifact was built; an artifact without one: the paper's probe, K = 1)."""
        return self._estimator_setting

    @field_validator("calibrator")
    @classmethod
    def _calibrator_loads(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            fitted = DecoupledCalibrator.from_dict(value)
        except CalibrationError as exc:
            raise ValueError(f"unusable calibrator: {exc}") from exc
        if not fitted.is_fitted:
            raise ValueError("the calibrator is not fitted")
        return value

    @classmethod
    def create(
        cls,
        calibrator: DecoupledCalibrator,
        *,
        model_fingerprint: str,
        data_fingerprint: str,
        visual_normalization: VisualNormalization | tuple[float, float] | None = None,
        thresholds: Sequence[CertifiedThreshold] = (),
        metrics: Mapping[str, CalibrationSummary] | None = None,
        info: Mapping[str, Any] | None = None,
        evaluation: Mapping[str, HeldOutScores] | None = None,
        familiarity: FamiliarityReference | None = None,
    ) -> CalibrationArtifact:
        """An artifact stamped with the current UTC time (``visual_normalization`` may be a (mean, std) pair)."""
        if isinstance(visual_normalization, tuple):
            visual_normalization = VisualNormalization(mean=visual_normalization[0], std=visual_normalization[1])
        return cls(
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            model_fingerprint=model_fingerprint,
            data_fingerprint=data_fingerprint,
            calibrator=calibrator.to_dict(),
            visual_normalization=visual_normalization,
            thresholds=tuple(thresholds),
            metrics=dict(metrics or {}),
            info=dict(info or {}),
            evaluation=None if evaluation is None else dict(evaluation),
            familiarity=familiarity,
        )

    @property
    def familiarity_features(self) -> FeatureKind | None:
        """The kind of features the familiarity reference measures, ``"model"`` or ``"client"`` (None: no
        reference). Only ``"client"`` applies to a model whose internals the guard cannot see."""
        return None if self.familiarity is None else self.familiarity.features

    def decoupled_calibrator(self) -> DecoupledCalibrator:
        """The fitted calibrator (a fresh object on each call)."""
        return DecoupledCalibrator.from_dict(self.calibrator)

    def certified(self, component: str, *, max_error: float, delta: float) -> CertifiedThreshold | None:
        """The stored certified rule for ``component`` at exactly this (alpha, delta), or ``None``."""
        for t in self.thresholds:
            if t.component == component and math.isclose(t.alpha, max_error) and math.isclose(t.delta, delta):
                return t
        return None


# ---------------------------------------------------------------------------------------------------------------
# Fingerprints


def _hash_files(files: Iterable[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode("utf-8") + b"\0" + str(path.stat().st_size).encode("ascii") + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def fingerprint_model(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` over a model's config, tokenizer/processor and weight files (names, sizes and bytes).

    ``path`` is a model directory (its top-level ``config.json``-like files and ``*.safetensors``/``*.bin``/...
    weights, sorted by name; other files, such as a calibration artifact saved beside them, are ignored) or a
    single weight file.
    """
    root = Path(path)
    if root.is_file():
        return _hash_files([(root.name, root)])
    if not root.is_dir():
        raise ArtifactError(f"cannot fingerprint model {root}: no such file or directory")
    files = sorted(
        (p.name, p)
        for p in root.iterdir()
        if p.is_file() and (p.name in _MODEL_FILES or p.name.endswith(_WEIGHT_SUFFIXES))
    )
    if not any(name.endswith(_WEIGHT_SUFFIXES) for name, _ in files):
        raise ArtifactError(f"cannot fingerprint model {root}: no weight files (*.safetensors, *.bin, ...)")
    return _hash_files(files)


def served_model_fingerprint(model: str) -> str:
    """The fingerprint binding an artifact to the served model ``model`` (its id on the server): ``served:<id>``."""
    if not isinstance(model, str) or not model.strip():
        raise ArtifactError(f"a served model's id must be a non-empty string, got {model!r}")
    return SERVED_PREFIX + model.strip()


def _mismatch(where: Path, fitted: str, expected: str) -> str:
    """Why an artifact fitted on ``fitted`` cannot calibrate ``expected`` (served ids named as such)."""
    served_fitted, served_expected = fitted.startswith(SERVED_PREFIX), expected.startswith(SERVED_PREFIX)
    name = fitted.removeprefix(SERVED_PREFIX)
    wanted = expected.removeprefix(SERVED_PREFIX)
    if served_fitted and served_expected:
        return f"artifact {where} was fitted on the served model {name!r}, not {wanted!r}: calibrate this one"
    if served_fitted:
        return (
            f"artifact {where} was fitted on the served model {name!r}'s black-box signals, not on this model "
            f"folder (fingerprint {expected}): a model run in process needs an artifact of its own"
        )
    if served_expected:
        return (
            f"artifact {where} was fitted on a model folder's white-box signals (fingerprint {fitted}), not on the "
            f"served model {wanted!r}: calibrate it with `guardrail calibrate --base-url URL --model {wanted}`"
        )
    return f"artifact {where} was fitted on another model: fingerprint {fitted}, expected {expected}"


def fingerprint_data(source: str | os.PathLike[str] | Iterable[Any]) -> str:
    """``sha256:<hex>`` of a data set: a file's bytes, a directory's files (sorted), or an iterable of records.

    Records are hashed as canonical JSON (sorted keys; non-JSON values by ``str``), one per line, in order.
    """
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        if root.is_file():
            return _hash_files([(root.name, root)])
        if root.is_dir():
            return _hash_files(sorted((str(p.relative_to(root)), p) for p in root.rglob("*") if p.is_file()))
        raise ArtifactError(f"cannot fingerprint data {root}: no such file or directory")
    digest = hashlib.sha256()
    for record in source:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Save and load


def _checksum(payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _non_finite(value: Any, where: str) -> str | None:
    """The path of the first NaN or infinity inside ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, Mapping):
        items: Iterable[tuple[str, Any]] = ((f"{where}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((found for key, v in items if (found := _non_finite(v, key)) is not None), None)


def save_artifact(artifact: CalibrationArtifact, path: str | os.PathLike[str]) -> Path:
    """Write ``artifact`` as strict JSON (NaN refused) with a content checksum, atomically; returns the path."""
    target = Path(path)
    bad = _non_finite(artifact.model_dump(mode="python", by_alias=True), "artifact")
    if bad is not None:
        raise ArtifactError(f"cannot save artifact {target}: {bad} is NaN or infinity (strict JSON has neither)")
    payload = artifact.model_dump(mode="json", by_alias=True)
    if payload.get("evaluation") is None:
        del payload["evaluation"]  # optional: a file without it is the same as before the field existed
    payload["checksum"] = _checksum(payload)
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as exc:
        raise ArtifactError(f"cannot write artifact {target}: {exc}") from exc
    return target


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {path}: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise ArtifactError(f"artifact {path} is empty (truncated file?)")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"artifact {path} is corrupted: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or not text.rstrip().endswith("}"):  # saved files end with "}"
            raise ArtifactError(
                f"artifact {path} is truncated: the JSON ends early (line {exc.lineno}, column {exc.colno})"
            ) from exc
        raise ArtifactError(
            f"artifact {path} is corrupted: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"artifact {path} is corrupted: expected a JSON object, got {type(data).__name__}")
    return data


def load_artifact(
    path: str | os.PathLike[str], *, expected_model_fingerprint: str | None = None
) -> CalibrationArtifact:
    """Read and check an artifact; any problem is an ArtifactError naming ``path`` and what is wrong.

    With ``expected_model_fingerprint`` (e.g. ``fingerprint_model(model_dir)``, or
    ``served_model_fingerprint("gpt-4o")`` for a served model) an artifact fitted on another model is refused.
    """
    where = Path(path)
    data = _read_json(where)
    schema = data.get("schema")
    if schema != ARTIFACT_SCHEMA:
        raise ArtifactError(
            f"{where} is not a guardrail calibration artifact: schema {schema!r}, expected {ARTIFACT_SCHEMA!r}"
        )
    version = data.get("version")
    if version != ARTIFACT_VERSION:
        raise ArtifactError(
            f"artifact {where} has version {version!r}; this guardrail reads version {ARTIFACT_VERSION}"
            " (refit it with `guardrail calibrate`)"
        )
    checksum = data.pop("checksum", None)
    if checksum is None:
        raise ArtifactError(f"artifact {where} is missing field(s): checksum")
    try:
        artifact = CalibrationArtifact.model_validate(data)
    except ValidationError as exc:
        missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
        if missing:
            raise ArtifactError(f"artifact {where} is missing field(s): {', '.join(missing)}") from exc
        first = exc.errors()[0]
        if not first["loc"] and first["type"] == "value_error":  # a whole-model check names its field itself
            raise ArtifactError(f"artifact {where} has an invalid field {first['ctx']['error']}") from exc
        field = ".".join(map(str, first["loc"])) or "<root>"
        raise ArtifactError(f"artifact {where} has an invalid field {field}: {first['msg']}") from exc
    try:
        actual = _checksum(data)
    except ValueError as exc:
        raise ArtifactError(f"artifact {where} is corrupted: {exc}") from exc
    if actual != checksum:
        raise ArtifactError(f"artifact {where} is corrupted: checksum mismatch (edited or damaged after saving)")
    if expected_model_fingerprint is not None and artifact.model_fingerprint != expected_model_fingerprint:
        raise ArtifactError(_mismatch(where, artifact.model_fingerprint, expected_model_fingerprint))
    return artifact
