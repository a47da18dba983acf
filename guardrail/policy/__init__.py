"""Policies: the YAML schema, the loader with precise errors, and the pure decision engine.

``load_policy("default")`` (or a path, or YAML text) gives a validated :class:`Policy`; :func:`decide` picks the
next action for a calibrated confidence. Problems in a file are raised together as a
:class:`~guardrail.errors.PolicyError`, each at ``FILE:LINE:COL``.
"""

from __future__ import annotations

from .engine import decide
from .loader import builtin_policy_names, check_policy_file, load_builtin_policy, load_policy
from .schema import (
    AbstainParams,
    ActionSpec,
    AttemptCondition,
    Bound,
    Budget,
    CertifiedBound,
    Condition,
    EscalateParams,
    FallbackParams,
    FamiliarityThreshold,
    FetchMoreViewsParams,
    Policy,
    ReAskParams,
    Rule,
    Threshold,
)

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
    "Threshold",
    "builtin_policy_names",
    "check_policy_file",
    "decide",
    "load_builtin_policy",
    "load_policy",
]
