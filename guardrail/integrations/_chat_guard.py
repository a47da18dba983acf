"""The guard a ``GuardrailChatModel`` builds for itself from ``model``, ``base_url`` and ``api_key``.

The LangChain way to name a served or hosted model (``ChatOpenAI(model=..., base_url=..., api_key=...)``) becomes
a guard over an :class:`~guardrail.backends.openai.OpenAICompatibleBackend`: the black-box estimator
(:class:`~guardrail.confidence.blackbox.AgreementEstimator`: server-side scoring where the server offers it, else
percept agreement under re-queries on changed images), the artifact's calibrator and the policy with its certified
thresholds taken from the artifact (:func:`guardrail.pretrained.resolve_certified`, as ``load_guard`` does in process).

The key goes to the ``openai`` client only, never into a name, a log line or a trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..calibration.artifact import CalibrationArtifact
from ..errors import ConfigurationError
from ..guard import Guard
from ..policy.loader import load_policy
from ..policy.schema import Policy
from ..pretrained import resolve_certified

if TYPE_CHECKING:
    from ..confidence.blackbox import AgreementEstimator

__all__ = ["DEFAULT_BASE_URL", "blackbox_estimator", "remote_guard"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
"""The server when neither ``base_url`` nor ``$OPENAI_BASE_URL`` names one (the ``openai`` client's default)."""

DEFAULT_TIMEOUT = 60.0
"""Seconds one request to the server may take when the model has no ``timeout`` (the backend's default)."""


def remote_guard(
    *,
    model: str,
    base_url: str | None,
    api_key: str | None,
    artifact: CalibrationArtifact | str | os.PathLike[str] | None,
    policy: Policy | str | os.PathLike[str],
    estimator: Any,
    timeout: float | None,
    max_retries: int,
) -> Guard:
    """A guard over the OpenAI-compatible server at ``base_url`` (else ``$OPENAI_BASE_URL``, else the OpenAI API)
    answering with the served model ``model``, calibrated by ``artifact`` (``None``: uncalibrated).

    ``timeout`` and ``max_retries`` bound each request of the ``openai`` client (transport retries); the policy
    decides re-asks and what follows a failed call. ``estimator`` replaces the black-box estimator built from the
    artifact (:func:`blackbox_estimator`).
    """
    if not model:
        raise ConfigurationError(
            "GuardrailChatModel needs `model` (the served model's id, e.g. model='gpt-4o') to build its backend "
            "from base_url/api_key"
        )
    from ..backends.openai import OpenAICompatibleBackend

    loaded = _artifact(artifact)
    if loaded is not None and loaded.served_model is not None and loaded.served_model != model:
        from ..errors import ArtifactError

        raise ArtifactError(
            f"{_source(artifact)} was fitted on the served model {loaded.served_model!r}, not {model!r}: calibrate "
            f"this one with `guardrail calibrate --base-url URL --model {model}`"
        )
    rules = policy if isinstance(policy, Policy) else load_policy(str(policy))
    if loaded is not None:
        rules = resolve_certified(rules, loaded, source=_source(artifact))
    backend = OpenAICompatibleBackend(
        base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        model,
        api_key=api_key,
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        max_retries=max_retries,
    )
    return Guard(
        backend,
        estimator=estimator if estimator is not None else blackbox_estimator(loaded),
        calibrator=None if loaded is None else loaded.decoupled_calibrator(),
        policy=rules,
    )


def blackbox_estimator(artifact: CalibrationArtifact | None) -> AgreementEstimator:
    """The black-box estimator for a remote model under ``artifact``'s probe.

    An artifact fitted on a served model's black-box signals (``guardrail calibrate --base-url``) gives the estimator
    it was measured with (``artifact.blackbox_setting``: K re-queries, log-probs or re-asks; no server scoring).
    With an artifact fitted under the blackout probe, server-side scoring uses its K, blackout probability,
    stability views and visual normalisation (so a vLLM server's signals are the in-process ones); another probe
    kind cannot be scored on the server, so the visual signal is agreement under re-queries. An artifact whose
    familiarity reference is fitted on client features (``familiarity_features == "client"``) measures each
    request's familiarity against it; one of the model's own features cannot apply to a served model and is left
    out. No artifact: the defaults.
    """
    from ..confidence.blackbox import AgreementEstimator

    if artifact is None:
        return AgreementEstimator()
    if artifact.blackbox_setting is not None:
        return artifact.blackbox_setting.estimator()
    setting = artifact.estimator_setting
    probe = setting.probe
    familiarity = artifact.familiarity if artifact.familiarity_features == "client" else None
    if probe.perturbation != "blackout":
        return AgreementEstimator(server_scoring=False, familiarity=familiarity)
    return AgreementEstimator(
        scoring_draws=setting.draws,
        scoring_probability=probe.blackout_probability,
        normalization=artifact.visual_normalization,
        stability=probe.stability,
        familiarity=familiarity,
    )


def _artifact(artifact: CalibrationArtifact | str | os.PathLike[str] | None) -> CalibrationArtifact | None:
    if artifact is None or isinstance(artifact, CalibrationArtifact):
        return artifact
    if isinstance(artifact, (str, os.PathLike)):
        from ..calibration.artifact import load_artifact

        return load_artifact(artifact)
    raise ConfigurationError(
        f"`artifact` must be a CalibrationArtifact, a path to one or None, got {type(artifact).__name__}"
    )


def _source(artifact: object) -> str:
    return str(Path(artifact)) if isinstance(artifact, (str, os.PathLike)) else "the artifact"
