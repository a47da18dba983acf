"""The policy schema: what a YAML policy may say, validated by pydantic.

A policy is an ordered list of rules; the first whose ``when`` matches the calibrated confidence decides what
happens next. Conditions are structured data (component, comparison, threshold), never evaluated strings::

    version: 1
    name: default
    budget: {max_attempts: 3, max_seconds: 30}
    rules:
      - name: perception-doubt
        when: {visual: {below: 0.5}, reasoning: {at_least: 0.5}}
        do: fetch_more_views
        with: {views: 2, provider: zoom}
      - when: {visual: {unknown: true}}
        do: escalate
      - when: {familiarity: {below: 0.01}}
        do: abstain
    otherwise: accept
    on_exhausted: abstain
    on_error: abstain

A guard without a calibration has raw scores, not probabilities: by default its answers are never accepted but
end in ``on_uncalibrated`` (abstain, or escalate); ``accept_uncalibrated: true`` lets the rules decide on them::

    accept_uncalibrated: false   # the default
    on_uncalibrated: abstain     # the default; or escalate

A numeric comparison matches only a *known* component: an unknown one never passes ``at_least`` nor fails
``below``; say what should happen to unknowns with ``{unknown: true}``.

``familiarity`` is a conformal p-value, not a probability of being right: on inputs like the calibration data it
is uniform, so ``{below: t}`` fires on at most a fraction t of them. Its thresholds are plain numbers (that
false-alarm rate *is* the guarantee); certified ``{max_error, delta}`` thresholds are refused for it.

``stability`` is measured, not calibrated: the share of the percept's token probability that survives views of the
image that must not change it (unknown where the artifact has no stability probe). Plain numbers only, likewise.

Numbers and booleans are strict: a boolean or a string is never a number, and a number or a string never a
boolean. Read laxly, ``at_least: false`` was ``>= 0`` (always true), ``below: true`` was ``< 1`` and
``below: "0.5"`` was ``< 0.5``; YAML reads ``true``, ``false``, ``yes``, ``no``, ``on`` and ``off`` as booleans, so a
slip of the pen would silently change what a rule means. (An integer is a number: ``at_least: 1`` is 1.0.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, Tag, field_validator, model_validator

from ..types import COMPONENTS, Action, Component

__all__ = [
    "AbstainParams",
    "ActionSpec",
    "AttemptCondition",
    "Bound",
    "Budget",
    "CertifiedBound",
    "Condition",
    "EscalateParams",
    "FallbackParams",
    "FamiliarityThreshold",
    "FetchMoreViewsParams",
    "Policy",
    "ReAskParams",
    "Rule",
    "StabilityThreshold",
    "Threshold",
    "ViewsMode",
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False), Strict()]
StrictFloat = Annotated[float, Strict()]
"""A number (an integer too), never a boolean or a string (see the module docstring)."""
StrictInt = Annotated[int, Strict()]
"""An integer, never a boolean, a float or a string."""
StrictBool = Annotated[bool, Strict()]
"""``true`` or ``false``, never a number or a string."""


class CertifiedBound(_Strict):
    """A threshold taken from the calibration artifact instead of written by hand (METHOD.md section 7).

    The certified threshold t of a component at (``max_error``, ``delta``) guarantees that, among answers with
    confidence >= t, the error rate is at most ``max_error`` with probability at least 1 - ``delta`` over the
    calibration draw. Use it as ``at_least`` to accept, or as ``below`` to send the rest to a remedy.
    """

    max_error: StrictFloat = Field(gt=0.0, lt=1.0, allow_inf_nan=False)
    delta: StrictFloat = Field(gt=0.0, lt=1.0, allow_inf_nan=False)


def _bound_kind(value: Any) -> str:
    return "certified" if isinstance(value, dict | CertifiedBound) else "number"


Bound = Annotated[
    Annotated[Probability, Tag("number")] | Annotated[CertifiedBound, Tag("certified")],
    Discriminator(_bound_kind),
]
"""A threshold: a number in [0, 1], or ``{max_error, delta}`` certified from the calibration artifact."""

BOUND_TAGS = ("number", "certified")
"""The tags pydantic puts into an error's location inside a ``Bound``."""

_OPERATORS = ("below", "at_most", "above", "at_least")


class Threshold(_Strict):
    """Comparisons on one confidence component, all of which must hold (e.g. ``{at_least: 0.3, below: 0.7}``)."""

    below: Bound | None = None
    at_most: Bound | None = None
    above: Bound | None = None
    at_least: Bound | None = None
    unknown: StrictBool | None = None
    """``true``: matches when the component could not be measured; ``false``: matches when it was."""

    @model_validator(mode="after")
    def _check(self) -> Threshold:
        numeric = [self.below, self.at_most, self.above, self.at_least]
        if self.unknown is None and all(v is None for v in numeric):
            raise ValueError("a threshold needs at least one of below, at_most, above, at_least, unknown")
        if self.unknown is True and any(v is not None for v in numeric):
            raise ValueError("'unknown: true' cannot be combined with numeric comparisons (an unknown has no value)")
        return self

    def matches(self, value: float | None) -> bool:
        """Whether ``value`` (``None`` = unknown) satisfies every comparison."""
        if value is None:
            return self.unknown is True
        if self.unknown is True:
            return False
        below, at_most, above, at_least = self._numeric
        return (
            (below is None or value < below)
            and (at_most is None or value <= at_most)
            and (above is None or value > above)
            and (at_least is None or value >= at_least)
        )

    @cached_property
    def _numeric(self) -> tuple[float | None, float | None, float | None, float | None]:
        bounds = tuple(getattr(self, op) for op in _OPERATORS)
        if any(isinstance(b, CertifiedBound) for b in bounds):
            raise ValueError("a certified threshold must be resolved from a calibration artifact before use")
        return bounds

    def certified(self) -> dict[str, CertifiedBound]:
        """The comparisons whose threshold is still to be taken from a calibration artifact."""
        return {op: bound for op in _OPERATORS if isinstance(bound := getattr(self, op), CertifiedBound)}

    def describe(self, name: str, value: float | None) -> str:
        """A short human reading, e.g. ``visual 0.31 < 0.5``."""
        shown = "unknown" if value is None else f"{value:.3g}"
        if self.unknown is not None:
            return f"{name} {'is' if self.unknown else 'is not'} unknown"
        parts = [
            f"{op} {bound:g}" if isinstance(bound, float) else f"{op} certified({bound.max_error:g}, {bound.delta:g})"
            for op, bound in (("<", self.below), ("<=", self.at_most), (">", self.above), (">=", self.at_least))
            if bound is not None
        ]
        return f"{name} {shown} " + " and ".join(parts)


class _PlainThreshold(Threshold):
    """Comparisons on a component that is not a calibrated probability: plain numbers only (``_why`` says why)."""

    _name: ClassVar[str]
    _why: ClassVar[str]

    @field_validator(*_OPERATORS, mode="before")
    @classmethod
    def _plain_number(cls, value: Any) -> Any:
        if isinstance(value, dict | CertifiedBound):
            raise ValueError(
                f"a certified threshold {{max_error, delta}} is not allowed for {cls._name}: its thresholds are plain "
                f"numbers in [0, 1] ({cls._why})"
            )
        return value


class FamiliarityThreshold(_PlainThreshold):
    """Comparisons on ``familiarity``: like :class:`Threshold`, but with plain numbers only.

    Familiarity is a conformal p-value (uniform on inputs like the calibration data), so ``{below: t}`` already
    carries its guarantee: it fires on at most a fraction t of in-distribution inputs. A certified
    ``{max_error, delta}`` threshold (an error rate among accepted answers) has no meaning for it.
    """

    _name = "familiarity"
    _why = "familiarity is a p-value: 'below: t' fires on at most a fraction t of inputs like the calibration data"


class StabilityThreshold(_PlainThreshold):
    """Comparisons on ``stability``: plain numbers only, like familiarity.

    Stability is the share of the percept's token probability that survives views of the image that must not
    change it (``guardrail.confidence.stability``), measured, not calibrated: ``{below: 0.6}`` fires when the
    percept falls by more than ``-ln 0.6`` = 0.51 nats a token on average under the views. No error rate is
    certified for it.
    """

    _name = "stability"
    _why = "stability is measured, not a calibrated probability"


class AttemptCondition(_Strict):
    """Comparisons on the 0-based attempt index (e.g. ``{at_least: 2}`` after two re-asks)."""

    below: StrictInt | None = Field(default=None, ge=0)
    at_least: StrictInt | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> AttemptCondition:
        if self.below is None and self.at_least is None:
            raise ValueError("an attempt condition needs below or at_least")
        return self

    def matches(self, attempt: int) -> bool:
        """Whether ``attempt`` satisfies the comparisons."""
        return (self.below is None or attempt < self.below) and (self.at_least is None or attempt >= self.at_least)


class Condition(_Strict):
    """When a rule fires: every named comparison must hold (AND)."""

    visual: Threshold | None = None
    reasoning: Threshold | None = None
    overall: Threshold | None = None
    familiarity: FamiliarityThreshold | None = None
    """How familiar the input is (a conformal p-value); see :class:`FamiliarityThreshold`."""
    stability: StabilityThreshold | None = None
    """How stable the percept is under views that must not change it; see :class:`StabilityThreshold`."""
    attempt: AttemptCondition | None = None

    @field_validator("familiarity", "stability", mode="before")
    @classmethod
    def _as_plain(cls, value: Any) -> Any:
        if isinstance(value, Threshold) and not isinstance(value, _PlainThreshold):
            return value.model_dump(exclude_none=True)  # re-validated, so a certified bound is refused
        return value

    @model_validator(mode="after")
    def _check(self) -> Condition:
        if self.attempt is None and all(getattr(self, name) is None for name in COMPONENTS):
            raise ValueError(f"'when' needs at least one of {', '.join(COMPONENTS)}, attempt")
        return self

    def components(self) -> tuple[tuple[Component, Threshold], ...]:
        """The component comparisons, in the order of ``types.COMPONENTS``."""
        out: list[tuple[Component, Threshold]] = []
        for name in COMPONENTS:
            threshold = getattr(self, name)
            if threshold is not None:
                out.append((name, threshold))
        return tuple(out)


# ---------------------------------------------------------------------------------------------------------------
# Action parameters (the ``with:`` mapping), one model per action.


class NoParams(_Strict):
    """Accept takes no parameters."""


class AbstainParams(_Strict):
    """``abstain``: the message returned instead of an answer."""

    message: str | None = None


class ReAskParams(_Strict):
    """``re_ask``: call the model again, optionally with a follow-up prompt or another temperature.

    Reasoning again on what was seen: with ``keep_percept: true`` the new answer starts with the previous attempt's
    own ``<vision>`` block (the model is prefilled with it and continues from there; an attempt without one is
    re-asked from the start). With ``samples: K`` (K > 1, which needs a ``temperature`` > 0) the model answers K
    times, sampled, and the answer most of them give is kept (self-consistency; the first sample giving it is the
    attempt's answer, measured and decided on as any attempt's).
    """

    prompt: str | None = None
    """Text appended to the question (e.g. "Look again carefully and reason step by step.")."""
    temperature: StrictFloat | None = Field(default=None, ge=0.0, le=5.0, allow_inf_nan=False)
    keep_percept: StrictBool = False
    samples: StrictInt = Field(default=1, ge=1, le=16)

    @model_validator(mode="after")
    def _samples_are_sampled(self) -> ReAskParams:
        if self.samples > 1 and not self.temperature:
            raise ValueError(
                f"samples: {self.samples} needs a temperature > 0, got {self.temperature}: greedy samples would all "
                "be the same answer"
            )
        return self


ViewsMode = Literal["auto", "append", "replace", "tile"]
"""Where ``fetch_more_views`` puts the fetched views: see :class:`FetchMoreViewsParams`."""


class FetchMoreViewsParams(_Strict):
    """``fetch_more_views``: ask a view provider for more images of the scene and call again with them.

    The provider is always asked about the caller's original request (so ``zoom`` crops the original image, never
    an earlier view). ``mode`` says where the views go:

    - ``append``: after the images already in the request (the original and any views fetched before);
    - ``replace``: in place of the images of the last user message that has any (its text stays), so each later
      fetch replaces the previous views; for a backend that declares ``max_images`` = m, at most m views are
      asked for;
    - ``auto`` (the default): ``replace`` when the backend declares ``max_images`` and appending would put more
      images than that into the request (always, for a one-image model such as the reference model), else
      ``append``;
    - ``tile``: the views are tiles of the source (``views`` of them: 4, 9 or 16, a square grid) from a tile
      provider (e.g. ``tiles``), each shown to the model alone; the percepts of the tiles are merged by the
      percept merger named by ``merger`` (e.g. ``scenes``) and the model answers the original request with its
      ``<vision>`` block prefilled with the merged percept.
    """

    views: StrictInt = Field(default=2, ge=1, le=16)
    provider: str = Field(default="zoom", min_length=1)
    mode: ViewsMode = "auto"
    merger: str | None = Field(default=None, min_length=1)
    """The percept merger (registered with the guard by this name) of mode ``tile``; only there."""

    @model_validator(mode="after")
    def _tile_needs_a_merger(self) -> FetchMoreViewsParams:
        if self.mode == "tile":
            if self.merger is None:
                raise ValueError("mode: tile needs a merger (the percept merger's name, e.g. merger: scenes)")
            if self.views not in (4, 9, 16):
                raise ValueError(f"mode: tile needs views: 4, 9 or 16 (a square grid of tiles), got {self.views}")
        elif self.merger is not None:
            raise ValueError(f"merger is only for mode: tile (the mode is {self.mode})")
        return self


class EscalateParams(_Strict):
    """``escalate``: hand the question, best candidate answer and confidences to a human."""

    reason: str | None = None


class FallbackParams(_Strict):
    """``fallback``: call another model, registered with the guard under this name."""

    model: str = Field(min_length=1)


class _ActionBase(_Strict):
    @cached_property
    def action(self) -> Action:
        """The action as an enum."""
        return Action(getattr(self, "do"))  # noqa: B009 - ``do`` is declared by every subclass

    @cached_property
    def params(self) -> Mapping[str, Any]:
        """The action's parameters with defaults filled in (computed once: the model is frozen)."""
        with_: BaseModel = getattr(self, "with_")  # noqa: B009
        return MappingProxyType(with_.model_dump(exclude_none=True))


class AcceptAction(_ActionBase):
    do: Literal["accept"]
    with_: NoParams = Field(default=NoParams(), alias="with")


class AbstainAction(_ActionBase):
    do: Literal["abstain"]
    with_: AbstainParams = Field(default=AbstainParams(), alias="with")


class ReAskAction(_ActionBase):
    do: Literal["re_ask"]
    with_: ReAskParams = Field(default=ReAskParams(), alias="with")


class FetchMoreViewsAction(_ActionBase):
    do: Literal["fetch_more_views"]
    with_: FetchMoreViewsParams = Field(default=FetchMoreViewsParams(), alias="with")


class EscalateAction(_ActionBase):
    do: Literal["escalate"]
    with_: EscalateParams = Field(default=EscalateParams(), alias="with")


class FallbackAction(_ActionBase):
    do: Literal["fallback"]
    with_: FallbackParams = Field(alias="with")


ActionSpec = Annotated[
    AcceptAction | AbstainAction | ReAskAction | FetchMoreViewsAction | EscalateAction | FallbackAction,
    Field(discriminator="do"),
]
"""An action with its parameters: ``accept`` or ``{do: re_ask, with: {prompt: ...}}``."""

ExhaustedSpec = Annotated[AbstainAction | EscalateAction, Field(discriminator="do")]
"""What to do when the budget is spent: only abstain or escalate (never an unchecked accept)."""

ErrorSpec = Annotated[AbstainAction | EscalateAction | ReAskAction | FallbackAction, Field(discriminator="do")]
"""What to do when a stage fails: abstain, escalate, retry (re_ask) or fall back; never accept."""


class _RuleFields(_Strict):
    name: str | None = None
    when: Condition


class AcceptRule(AcceptAction, _RuleFields):
    """A rule that accepts."""


class AbstainRule(AbstainAction, _RuleFields):
    """A rule that abstains."""


class ReAskRule(ReAskAction, _RuleFields):
    """A rule that re-asks."""


class FetchMoreViewsRule(FetchMoreViewsAction, _RuleFields):
    """A rule that fetches more views."""


class EscalateRule(EscalateAction, _RuleFields):
    """A rule that escalates."""


class FallbackRule(FallbackAction, _RuleFields):
    """A rule that falls back to another model."""


Rule = Annotated[
    AcceptRule | AbstainRule | ReAskRule | FetchMoreViewsRule | EscalateRule | FallbackRule,
    Field(discriminator="do"),
]
"""One policy rule: a condition (``when``), an action (``do``) and its parameters (``with``)."""


class Budget(_Strict):
    """Bounds on one guarded call: model calls and wall-clock seconds."""

    max_attempts: StrictInt = Field(default=3, ge=1, le=100)
    max_seconds: StrictFloat | None = Field(default=30.0, gt=0.0, allow_inf_nan=False)
    """``null`` means no time limit (model calls then run on the caller's thread)."""


UNCALIBRATED_MESSAGE = "this model has no calibration, so the guard cannot judge its answers"
"""The default ``on_uncalibrated`` abstention's message: what an agent's user is told instead of an answer."""


def _shorthand_action(value: Any) -> Any:
    return {"do": value} if isinstance(value, str) else value


class Policy(_Strict):
    """A complete policy. Build one from YAML with :func:`guardrail.load_policy`."""

    version: Literal[1]
    name: str = Field(min_length=1)
    description: str = ""
    budget: Budget = Budget()
    rules: tuple[Rule, ...] = ()
    otherwise: ActionSpec
    on_exhausted: ExhaustedSpec = AbstainAction(do="abstain")
    on_error: ErrorSpec = AbstainAction(do="abstain")
    accept_uncalibrated: StrictBool = False
    """``true``: the rules decide on raw scores when the guard has no calibration (an explicit opt-in: raw scores
    are not probabilities, an overall of 0.99 may be wrong half the time). ``false`` (the default): an uncalibrated
    confidence is never accepted; it goes to ``on_uncalibrated`` whatever the rules say."""
    on_uncalibrated: ExhaustedSpec = AbstainAction(do="abstain", with_=AbstainParams(message=UNCALIBRATED_MESSAGE))
    """What an uncalibrated answer gets without ``accept_uncalibrated``: abstain (the default, with
    :data:`UNCALIBRATED_MESSAGE`) or escalate."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):  # True == 1: a Literal[1] alone would take it
            raise ValueError(f"should be 1 (the number), got {'true' if value else 'false'}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("otherwise", "on_exhausted", "on_error", "on_uncalibrated"):
            if key in data:
                data[key] = _shorthand_action(data[key])
        return data

    def certified_bounds(self) -> list[tuple[str, Component, str, CertifiedBound]]:
        """Every threshold still to be taken from a calibration artifact: (where, component, operator, bound)."""
        found = []
        for index, rule in enumerate(self.rules):
            for component, threshold in rule.when.components():
                for op, bound in threshold.certified().items():
                    found.append((f"rules[{index}].when.{component}.{op}", component, op, bound))
        return found

    def with_certified(self, resolve: Callable[[Component, CertifiedBound], float]) -> Policy:
        """A copy with every certified threshold replaced by ``resolve(component, bound)``."""
        if not self.certified_bounds():
            return self
        data = self.model_dump(by_alias=True, exclude_none=True)
        for index, rule in enumerate(self.rules):
            for component, threshold in rule.when.components():
                for op, bound in threshold.certified().items():
                    data["rules"][index]["when"][component][op] = resolve(component, bound)
        return Policy.model_validate(data)

    def rule_label(self, index: int) -> str:
        """``rules[i]``, followed by the rule's name when it has one."""
        name = self.rules[index].name
        return f"rules[{index}]" if name is None else f"rules[{index}] {name}"
