"""Build a ready guard for a transformers vision-language model folder: ``load_guard(model_dir)``.

This is the one place that assembles the parts: the transformers backend, the decoupled estimator (with the
visual normalisation of the calibration artifact), the fitted calibrator, and the policy. The shipped reference
model is just the default folder; nothing here is specific to it.

Calibration artifacts are found next to the model as ``guardrail_calibration.json`` unless given explicitly. An
artifact fitted on another model, or a corrupt one, is refused with an :class:`~guardrail.ArtifactError` at load
time: the guard is never built on a calibration it cannot trust (fail closed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .backends.base import Backend
from .calibration.artifact import CalibrationArtifact
from .calibration.base import Calibrator
from .errors import ConfigurationError
from .guard import Guard
from .policy.loader import load_policy
from .policy.schema import CertifiedBound, Policy

if TYPE_CHECKING:
    from .backends.transformers import TransformersBackend
    from .calibration.collect import ScoredItem
    from .confidence.estimator import DecoupledEstimator
    from .data.labelled import LabelledItem

__all__ = [
    "ARTIFACT_FILENAME",
    "calibrate_model",
    "default_model_path",
    "estimator_for",
    "find_artifact",
    "load_backend",
    "load_guard",
    "resolve_certified",
]

ARTIFACT_FILENAME = "guardrail_calibration.json"
"""Where a model folder keeps its calibration artifact."""


def default_model_path() -> Path:
    """The model used when none is named: ``$GUARDRAIL_MODEL`` if set, else the shipped reference model."""
    env = os.environ.get("GUARDRAIL_MODEL")
    if env:
        return Path(env)
    from .reference import reference_model_path

    return reference_model_path()


def model_path(model: str | os.PathLike[str] | None) -> Path:
    """The model folder ``model`` names: a folder, or the short name of a shipped model (``reference``,
    ``verbalized``, ``scenes``) where no such folder exists; ``None``: :func:`default_model_path`."""
    if model is None:
        return default_model_path()
    path = Path(model)
    if not path.exists():
        from .reference import shipped_model_path

        shipped = shipped_model_path(str(model))
        if shipped is not None and not (shipped / "config.json").is_file():
            raise ConfigurationError(
                f"model {str(model)!r}: this installation ships no {model} model (none good enough yet); train one "
                f"with `guardrail train reference --world {model} --out DIR` and give that folder"
            )
        if shipped is not None:
            return shipped
    return path


def find_artifact(model_dir: str | os.PathLike[str]) -> Path | None:
    """The calibration artifact stored next to a model, if there is one."""
    candidate = Path(model_dir) / ARTIFACT_FILENAME
    return candidate if candidate.is_file() else None


def load_guard(
    model: str | os.PathLike[str] | None = None,
    *,
    artifact: str | os.PathLike[str] | Literal["auto"] | None = "auto",
    policy: Policy | str | os.PathLike[str] = "default",
    device: str | None = None,
    dtype: str | None = None,
    draws: int | None = None,
    perturbation: str | None = None,
    batch_size: int = 1,
    **guard_options: Any,
) -> Guard:
    """A :class:`Guard` over the transformers model in ``model`` (default: :func:`default_model_path`).

    ``artifact="auto"`` uses the model folder's ``guardrail_calibration.json`` when present; ``None`` (or a folder
    without one) runs uncalibrated: raw scores pass through (fine for ranking, not probabilities), construction
    warns (:class:`~guardrail.errors.UncalibratedWarning`) and no answer is accepted unless the policy opted in
    (``allow_uncalibrated=True``, or ``accept_uncalibrated: true`` in the policy). ``draws`` (K, perturbations
    averaged for the visual signal) and ``perturbation`` default to the settings the artifact was fitted under
    (its normalisation depends on them), else 1 and ``"blackout"``. ``batch_size`` > 1 answers concurrent calls
    through this guard (threads, ``graph.batch``, ``asyncio.gather``) in batches of up to that many
    (:class:`~guardrail.backends.CoalescingBackend`). Other keyword arguments go to :class:`Guard`.
    """
    from .calibration.artifact import fingerprint_model, load_artifact

    model_dir = model_path(model)
    artifact_path = find_artifact(model_dir) if artifact == "auto" else (None if artifact is None else Path(artifact))
    policy_object = policy if isinstance(policy, Policy) else load_policy(str(policy))
    calibrator: Calibrator | None = None
    loaded: CalibrationArtifact | None = None
    if artifact_path is not None:
        loaded = load_artifact(artifact_path, expected_model_fingerprint=fingerprint_model(model_dir))
        calibrator = loaded.decoupled_calibrator()
        policy_object = resolve_certified(policy_object, loaded, source=str(artifact_path))
    model_backend = load_backend(model_dir, device=device, dtype=dtype)
    backend: Backend = model_backend
    if batch_size > 1:
        from .backends.coalescing import CoalescingBackend

        backend = CoalescingBackend(model_backend, max_batch=batch_size)
    estimator = estimator_for(loaded, draws=draws, perturbation=perturbation)
    return Guard(backend, estimator=estimator, calibrator=calibrator, policy=policy_object, **guard_options)


def load_backend(
    model: str | os.PathLike[str] | None = None, *, device: str | None = None, dtype: str | None = None
) -> TransformersBackend:
    """The transformers backend over the model folder ``model`` (default: :func:`default_model_path`)."""
    from .backends.transformers import TransformersBackend
    from .reference import reference_model_name

    model_dir = model_path(model)
    name = reference_model_name(model_dir)  # the shipped model's own name, not its folder's ("model")
    named = {"name": name} if name is not None else {}
    return TransformersBackend.from_pretrained(model_dir, device=device, dtype=dtype, **named)


def calibrate_model(
    model: str | os.PathLike[str] | None,
    items: Sequence[LabelledItem],
    *,
    device: str | None = None,
    **options: Any,
) -> tuple[CalibrationArtifact, list[ScoredItem]]:
    """Score ``items`` with the transformers model in ``model`` and fit its calibration artifact, bound to that
    model's fingerprint. ``options`` are :func:`guardrail.calibration.pipeline.calibrate_backend`'s."""
    from .calibration.artifact import fingerprint_model
    from .calibration.pipeline import calibrate_backend

    model_dir = model_path(model)
    backend = load_backend(model_dir, device=device)
    return calibrate_backend(backend, items, model_fingerprint=fingerprint_model(model_dir), **options)


def estimator_for(
    artifact: CalibrationArtifact | None, *, draws: int | None = None, perturbation: str | None = None
) -> DecoupledEstimator:
    """The decoupled estimator an artifact was fitted under: its visual normalisation, familiarity reference and
    probe settings.

    The normalisation of s depends on the probe (kind, blackout probability, K), so by default they are the
    artifact's (``info["estimator"]``); ``draws`` or ``perturbation`` override them. No artifact: K = 1 and the
    paper's patch blackening at probability 0.8, with the default normalisation.
    """
    from .confidence.perturb import PERTURBATIONS
    from .confidence.settings import EstimatorSetting

    fitted_with = EstimatorSetting() if artifact is None else artifact.estimator_setting
    probe = fitted_with.probe
    if perturbation:
        try:
            probe = probe.replaced(perturbation=perturbation)
        except ValueError as exc:
            raise ConfigurationError(
                f"`perturbation` must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}"
            ) from exc
    return probe.estimator(
        draws=draws or fitted_with.draws,
        normalization=None if artifact is None else artifact.visual_normalization,
        familiarity=None if artifact is None else artifact.familiarity,
    )


def resolve_certified(policy: Policy, artifact: CalibrationArtifact, *, source: str = "the artifact") -> Policy:
    """``policy`` with its certified thresholds taken from ``artifact``.

    A threshold the artifact did not certify at that (max_error, delta), or could not certify at all (too few
    examples, or a base error above max_error), is a :class:`~guardrail.ConfigurationError` saying which and why:
    the guard is not built on a guarantee that does not hold.
    """

    def resolve(component: str, bound: CertifiedBound) -> float:
        found = artifact.certified(component, max_error=bound.max_error, delta=bound.delta)
        if found is None:
            targets = sorted({(t.alpha, t.delta) for t in artifact.thresholds if t.component == component})
            raise ConfigurationError(
                f"policy {policy.name!r} asks for a certified {component} threshold at max_error {bound.max_error:g}, "
                f"delta {bound.delta:g}, but {source} certified {component} only at (max_error, delta) in {targets}; "
                "re-run `guardrail calibrate` with that target"
            )
        if not found.feasible or found.threshold is None:
            raise ConfigurationError(
                f"policy {policy.name!r}: {source} cannot certify {component} at max_error {bound.max_error:g}, "
                f"delta {bound.delta:g}: {found.reason}"
            )
        return found.threshold

    return policy.with_certified(resolve)
