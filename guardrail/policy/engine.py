"""The decision engine: one pure function from (policy, confidence, budget state) to a ``Decision``.

This is the one place where a guarded call's next step is chosen. It does no I/O and keeps no state, so the
sync and async loops, the middleware and the benchmarks all share it.
"""

from __future__ import annotations

from ..types import Action, Component, Confidence, Decision, ErrorInfo
from .schema import Policy, Rule

__all__ = ["decide", "decide_on_error", "decide_on_exhausted", "decide_on_uncalibrated"]


def decide(policy: Policy, confidence: Confidence, *, attempt: int) -> Decision:
    """Pick the action for ``confidence`` after attempt ``attempt`` (0-based): the first matching rule, else
    ``otherwise``. A remedy (re-ask, more views, fallback) asked for on the last allowed attempt becomes
    ``on_exhausted``. An uncalibrated confidence (raw scores, ``confidence.calibrated`` false) gets
    ``on_uncalibrated`` before any rule unless the policy opted in (``accept_uncalibrated``)."""
    if not confidence.calibrated and not policy.accept_uncalibrated:
        return decide_on_uncalibrated(policy, confidence, attempt=attempt)
    for index, rule in enumerate(policy.rules):
        if _matches(rule, confidence, attempt):
            action = rule.action
            reason = _explain(rule, confidence)
            label = policy.rule_label(index)
            components = tuple(name for name, _ in rule.when.components())
            if not action.is_terminal and attempt + 1 >= policy.budget.max_attempts:
                return decide_on_exhausted(
                    policy,
                    attempt=attempt,
                    reason=f"budget of {policy.budget.max_attempts} attempts spent; {label} asked for "
                    f"{action.value} ({reason})",
                    components=components,
                )
            return Decision(
                action=action, rule=label, reason=reason, params=rule.params, attempt=attempt, components=components
            )
    spec = policy.otherwise
    if not spec.action.is_terminal and attempt + 1 >= policy.budget.max_attempts:
        return decide_on_exhausted(
            policy,
            attempt=attempt,
            reason=f"budget of {policy.budget.max_attempts} attempts spent; otherwise asked for {spec.action.value}",
        )
    return Decision(action=spec.action, rule="otherwise", reason="no rule matched", params=spec.params, attempt=attempt)


def decide_on_exhausted(
    policy: Policy, *, attempt: int, reason: str, components: tuple[Component, ...] = ()
) -> Decision:
    """The policy's ``on_exhausted`` action (abstain or escalate), with why the budget ran out; ``components``: those
    tested by the rule whose remedy could not be tried."""
    spec = policy.on_exhausted
    return Decision(
        action=spec.action,
        rule="on_exhausted",
        reason=reason,
        params=spec.params,
        attempt=attempt,
        components=components,
    )


def decide_on_uncalibrated(policy: Policy, confidence: Confidence, *, attempt: int) -> Decision:
    """The policy's ``on_uncalibrated`` action (abstain or escalate) for raw scores the policy does not accept."""
    spec = policy.on_uncalibrated
    overall = "unknown" if confidence.overall is None else f"{confidence.overall:.3g}"
    return Decision(
        action=spec.action,
        rule="on_uncalibrated",
        reason=f"uncalibrated: the guard has no calibration, so its confidences are raw scores (overall {overall}), "
        f"not probabilities; policy {policy.name!r} does not accept on them (accept_uncalibrated: false)",
        params=spec.params,
        attempt=attempt,
    )


def decide_on_error(policy: Policy, error: ErrorInfo, *, attempt: int) -> Decision:
    """The policy's ``on_error`` action for a failed stage; a retry on the last allowed attempt becomes
    ``on_exhausted``."""
    spec = policy.on_error
    reason = f"{error.stage} failed: {error.type}: {error.message}"
    if spec.action in (Action.RE_ASK, Action.FALLBACK) and attempt + 1 >= policy.budget.max_attempts:
        return decide_on_exhausted(
            policy, attempt=attempt, reason=f"budget of {policy.budget.max_attempts} attempts spent; {reason}"
        )
    return Decision(action=spec.action, rule="on_error", reason=reason, params=spec.params, attempt=attempt)


def _matches(rule: Rule, confidence: Confidence, attempt: int) -> bool:
    when = rule.when
    if when.attempt is not None and not when.attempt.matches(attempt):
        return False
    return all(threshold.matches(confidence.get(name)) for name, threshold in when.components())


def _explain(rule: Rule, confidence: Confidence) -> str:
    parts = [threshold.describe(name, confidence.get(name)) for name, threshold in rule.when.components()]
    if rule.when.attempt is not None:
        parts.append("attempt condition held")
    return " and ".join(parts)
