"""The settings of the visual probe, typed once for the estimator that uses them and the calibration that picks them.

Calibration chooses the probe on its labelled rows (``guardrail.calibration.perturbation_choice``) and records the
choice in the artifact's ``info["estimator"]``; ``load_guard`` builds the runtime estimator from that record. Both
sides read and write it through :class:`EstimatorSetting` here, in the confidence layer the estimator lives in,
so the runtime never depends on calibration-time code and the record has one schema:

- :class:`StabilitySetting`: how the stability probe draws its views (``confidence.stability``);
- :class:`ProbeSetting`: the visual probe's perturbation, its grounding weight and its stability views;
- :class:`EstimatorSetting`: a probe setting with its number of draws K, as an artifact records it;
- :class:`BlackBoxSetting`: the black-box estimator's re-queries, re-asks and use of token log-probs, as an artifact
  fitted on a served model's black-box signals records it (``info["blackbox"]``).

All three are frozen pydantic models that refuse unknown keys, so a misspelt or out-of-range value in an artifact
is an error naming the field (``info.estimator.grounding_weight``), not a silent default. Keys an older artifact
lacks take the paper's values (no grounding weight: 1; no stability probe: off). This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .normalization import VisualNormalization
from .perturb import PerturbationKind

if TYPE_CHECKING:
    from .blackbox import AgreementEstimator
    from .estimator import DecoupledEstimator
    from .familiarity import FamiliarityReference

__all__ = [
    "AGREEMENTS",
    "PAPER_DEFAULT",
    "REQUERY_KINDS",
    "STABILITY_FAMILIES",
    "AgreementKind",
    "BlackBoxSetting",
    "EstimatorSetting",
    "ProbeSetting",
    "RequeryKind",
    "StabilityFamily",
    "StabilitySetting",
    "parse_blackbox_info",
    "parse_estimator_info",
]

AgreementKind = Literal["percept", "answer"]
"""What the black-box estimator compares across perturbed re-queries: the ``<vision>`` percept or the final answer."""
AGREEMENTS: tuple[str, ...] = get_args(AgreementKind)

RequeryKind = Literal["stability", "blackout", "noise", "grey", "blur"]
"""How the black-box estimator changes the image of a re-query: ``stability``, the stability probe's mixed views
(a small colour jitter, rotation or shift, a little noise: ``confidence.stability``), or a perturbation of
``confidence.perturb``."""
REQUERY_KINDS: tuple[str, ...] = get_args(RequeryKind)

StabilityFamily = Literal["photometric", "geometric", "noise", "mixed"]
STABILITY_FAMILIES: tuple[str, ...] = get_args(StabilityFamily)
"""``photometric``: brightness, contrast, saturation and a hue nudge; ``geometric``: a small rotation, shift and
scale; ``noise``: mild Gaussian noise; ``mixed``: the three in turn."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class StabilitySetting(BaseModel):
    """How the stability probe draws its views: ``count`` K views of ``family``, the first seeded by ``seed``.

    ``count=0`` switches the probe off (artifacts written before it keep today's behaviour).
    """

    model_config = _FROZEN

    family: StabilityFamily = "mixed"
    count: int = Field(default=0, ge=0, le=32)
    seed: int = 0

    @property
    def label(self) -> str:
        """A short name, e.g. ``mixed x4`` (``off`` when ``count`` is 0)."""
        return "off" if self.count == 0 else f"{self.family} x{self.count}"


class ProbeSetting(BaseModel):
    """One setting of the visual probe: the perturbation's kind, for ``blackout`` the chance a patch is blackened,
    the weight of the grounding KL in s (``VisualNormalization.grounding_weight``), and the stability probe's views
    with the weight of the answer's fall under them (``VisualNormalization.stability_weight``; off by default).

    The defaults are the paper's setting (:data:`PAPER_DEFAULT`). The bounds of the weights are those of
    :class:`VisualNormalization`, which an estimator of this setting is built with."""

    model_config = _FROZEN

    perturbation: PerturbationKind = "blackout"
    blackout_probability: float = Field(default=0.8, ge=0.0, le=1.0, allow_inf_nan=False)
    grounding_weight: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    stability: StabilitySetting = StabilitySetting()
    stability_weight: float = Field(default=0.0, ge=0.0, le=100.0, allow_inf_nan=False)

    @property
    def label(self) -> str:
        """A short name: ``blackout(p=0.8)``, ``noise``, ``blackout(p=1) w=0.1`` (``w`` shown when not 1),
        ``blackout(p=1) w=0.1 + mixed x4 l=1`` (with the stability probe)."""
        kind = f"blackout(p={self.blackout_probability:g})" if self.perturbation == "blackout" else self.perturbation
        label = kind if self.grounding_weight == 1.0 else f"{kind} w={self.grounding_weight:g}"
        if self.stability.count:
            label += f" + {self.stability.label} l={self.stability_weight:g}"
        return label

    def as_info(self) -> dict[str, Any]:
        """The setting as plain JSON values, as an artifact's ``info["estimator"]`` stores it (without K)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_info(cls, info: Mapping[str, Any] | None) -> ProbeSetting:
        """The probe setting of an artifact's ``info["estimator"]`` (K, ``draws``, is dropped); see
        :func:`parse_estimator_info` for the defaults and the errors."""
        return parse_estimator_info(info).probe

    def replaced(self, **changes: Any) -> ProbeSetting:
        """This setting with ``changes`` applied and checked (a bad value is a ``ValidationError`` naming it)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def with_stability(self, stability: StabilitySetting, weight: float) -> ProbeSetting:
        """This probe with the stability probe's ``stability`` views weighed by ``weight`` (count 0: off)."""
        return self.replaced(stability=stability, stability_weight=weight if stability.count else 0.0)

    def weighted(self, grounding_weight: float) -> ProbeSetting:
        """This perturbation with another grounding weight."""
        return self.replaced(grounding_weight=grounding_weight)

    def estimator(
        self,
        *,
        draws: int = 1,
        normalization: VisualNormalization | None = None,
        familiarity: FamiliarityReference | None = None,
    ) -> DecoupledEstimator:
        """A decoupled estimator probing with this setting: the default normalisation (of this setting's grounding
        weight) unless one is given, which must have been fitted with the same weight."""
        from .estimator import DecoupledEstimator

        if normalization is None:
            normalization = VisualNormalization(
                grounding_weight=self.grounding_weight, stability_weight=self.stability_weight
            )
        elif (normalization.grounding_weight, normalization.stability_weight) != (
            self.grounding_weight,
            self.stability_weight,
        ):
            raise ValueError(
                f"the normalisation was fitted with grounding weight {normalization.grounding_weight:g} and "
                f"stability weight {normalization.stability_weight:g}, the probe setting has "
                f"{self.grounding_weight:g} and {self.stability_weight:g}"
            )
        return DecoupledEstimator(
            draws=draws,
            perturbation=self.perturbation,
            blackout_probability=self.blackout_probability,
            normalization=normalization,
            familiarity=familiarity,
            stability=self.stability,
        )


PAPER_DEFAULT: ProbeSetting = ProbeSetting()
"""The paper's probe: 14-px patches blackened with probability 0.8, grounding weight 1, no stability probe."""


class EstimatorSetting(BaseModel):
    """What an artifact records under ``info["estimator"]``: the probe setting and the number of draws K the
    normalisation and calibrators were fitted under, which ``load_guard`` builds its estimator with.

    Stored flat (``{"draws": 1, "perturbation": "blackout", ...}``, the layout artifacts have always had); use
    :func:`parse_estimator_info` to read one and :meth:`as_info` to write one."""

    model_config = _FROZEN

    draws: int = Field(default=1, ge=1)
    probe: ProbeSetting = PAPER_DEFAULT

    def as_info(self) -> dict[str, Any]:
        """The flat JSON record: ``{"draws": K, **probe.as_info()}``."""
        return {"draws": self.draws, **self.probe.as_info()}

    def estimator(
        self,
        *,
        normalization: VisualNormalization | None = None,
        familiarity: FamiliarityReference | None = None,
    ) -> DecoupledEstimator:
        """The decoupled estimator of this setting (see :meth:`ProbeSetting.estimator`)."""
        return self.probe.estimator(draws=self.draws, normalization=normalization, familiarity=familiarity)


def parse_estimator_info(info: Mapping[str, Any] | None, *, where: str = "info.estimator") -> EstimatorSetting:
    """Read an artifact's ``info["estimator"]`` record (``None`` or ``{}``: the paper's probe, K = 1).

    Keys an older artifact lacks take their defaults; an unknown key or a bad value is a ``ValueError`` naming
    the field under ``where``, the value and what was expected, e.g. ``info.estimator.grounding_weight: Input
    should be less than or equal to 1 (got 2.0)``.
    """
    if info is None:
        return EstimatorSetting()
    if not isinstance(info, Mapping):
        raise ValueError(f"{where}: expected an object of probe settings, got {type(info).__name__}")
    record = dict(info)
    draws = record.pop("draws", 1)
    try:
        return EstimatorSetting(draws=draws, probe=ProbeSetting.model_validate(record))
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"] if part != "probe"]
        field = ".".join([where, *loc])
        got = "" if error["type"] in ("missing", "extra_forbidden") else f" (got {error['input']!r})"
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        raise ValueError(f"{field}: {message}{got}") from exc


class BlackBoxSetting(BaseModel):
    """The black-box estimator an artifact fitted on a served model's signals was measured with
    (:class:`~guardrail.confidence.blackbox.AgreementEstimator`, server-side scoring off): ``draws`` K re-queries
    on changed images (``perturbation``: stability views by default; for blackout ``probability`` of a patch being
    blackened and ``patch_size``; first ``seed``), compared by ``agreement`` (the ``<vision>`` percept or the final
    answer), joined by the percept's minimum token probability where ``percept_logprobs`` and log-probs are known;
    ``logprobs`` whether the answer's token log-probs give reasoning and holistic; when they do not,
    ``reask_draws`` sampled re-asks at ``reask_temperature`` give reasoning as answer agreement.

    The calibrators learnt these features at these settings, so the guard measures with the same ones
    (:meth:`estimator`). Stored in an artifact's ``info["blackbox"]``; read with :func:`parse_blackbox_info`.
    """

    model_config = _FROZEN

    draws: int = Field(default=4, ge=1, le=64)
    perturbation: RequeryKind = "stability"
    probability: float = Field(default=0.25, ge=0.0, le=1.0, allow_inf_nan=False)
    patch_size: int = Field(default=14, ge=1)
    seed: int = 0
    logprobs: bool = True
    reask_draws: int = Field(default=0, ge=0, le=64)
    reask_temperature: float = Field(default=0.7, gt=0.0, allow_inf_nan=False)
    agreement: AgreementKind = "percept"
    percept_logprobs: bool = True

    @property
    def requests_per_call(self) -> int:
        """Model requests one measured answer costs: the answer, K re-queries and the re-asks (when used)."""
        return 1 + self.draws + (0 if self.logprobs else self.reask_draws)

    @property
    def label(self) -> str:
        """A short name, e.g. ``K=4 logprobs`` or ``K=4 re-asks=4``."""
        return f"K={self.draws} " + ("logprobs" if self.logprobs else f"re-asks={self.reask_draws}")

    def as_info(self) -> dict[str, Any]:
        """The setting as plain JSON values, as an artifact's ``info["blackbox"]`` stores it."""
        return self.model_dump(mode="json")

    def estimator(self) -> AgreementEstimator:
        """The black-box estimator of this setting (server-side scoring off: the features the artifact learnt)."""
        from .blackbox import AgreementEstimator

        return AgreementEstimator(
            draws=self.draws,
            perturbation=self.perturbation,
            probability=self.probability,
            patch_size=self.patch_size,
            seed=self.seed,
            server_scoring=False,
            reask_draws=0 if self.logprobs else self.reask_draws,
            reask_temperature=self.reask_temperature,
            use_logprobs=self.logprobs,
            agreement=self.agreement,
            percept_logprobs=self.percept_logprobs,
        )


def parse_blackbox_info(info: Mapping[str, Any] | None, *, where: str = "info.blackbox") -> BlackBoxSetting | None:
    """Read an artifact's ``info["blackbox"]`` record (``None``: the artifact is not a black-box one); an unknown key
    or a bad value is a ``ValueError`` naming the field under ``where`` and the value."""
    if info is None:
        return None
    if not isinstance(info, Mapping):
        raise ValueError(f"{where}: expected an object of black-box settings, got {type(info).__name__}")
    try:
        return BlackBoxSetting.model_validate(dict(info))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join([where, *(str(part) for part in error["loc"])])
        got = "" if error["type"] in ("missing", "extra_forbidden") else f" (got {error['input']!r})"
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        raise ValueError(f"{field}: {message}{got}") from exc
