"""The exceptions guardrail raises.

    GuardrailError                 base of everything raised on purpose
    ├── PolicyError                a policy file or object is invalid (carries every problem found)
    ├── ConfigurationError         the guard's parts do not fit (a policy names an unregistered provider)
    ├── InputError                 a request, image or data file is malformed
    │   └── ImageError             an image cannot be decoded safely
    ├── BackendError               a model call failed (translated from the backend library's error)
    │   ├── BackendTimeout         a model call did not answer within the budget
    │   └── WorkerLimitError       a model call could not start: too many earlier calls hang on worker threads
    ├── EstimatorError             confidence signals could not be computed
    ├── CalibrationError           a calibrator is unfitted, misused or failed
    ├── ArtifactError              a calibration or model artifact is corrupt, of another version or model
    └── ViewProviderError          a view provider failed or returned no usable image

    UncalibratedWarning            (a ``UserWarning``, not an error) a guard was built without a calibration

Foreign exceptions are translated at the seams (``raise BackendError(...) from exc``) so that callers can catch
one family. Inside a guarded call, every one of these ends in the policy's ``on_error`` action: never in an
unchecked answer. The one exception to catching is LangGraph's control flow (``is_control_flow``): an interrupt
raised inside a backend or view provider passes through every layer untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ArtifactError",
    "BackendError",
    "BackendTimeout",
    "CalibrationError",
    "ConfigurationError",
    "EstimatorError",
    "GuardrailError",
    "ImageError",
    "InputError",
    "PolicyError",
    "PolicyProblem",
    "UncalibratedWarning",
    "ViewProviderError",
    "WorkerLimitError",
    "is_control_flow",
]


def is_control_flow(exc: BaseException) -> bool:
    """Whether ``exc`` is LangGraph control flow (``GraphBubbleUp`` and subclasses, e.g. an interrupt), which no
    layer may catch and record as a failure (matched by name: langgraph need not be importable here)."""
    return any(cls.__name__ == "GraphBubbleUp" for cls in type(exc).__mro__)


class GuardrailError(Exception):
    """Base class of every error guardrail raises on purpose."""


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy: where it is (1-based line and column) and what is wrong."""

    source: str
    line: int
    column: int
    message: str
    snippet: str = ""

    def format(self, *, with_snippet: bool = False) -> str:
        """``FILE:LINE:COL: message``, optionally followed by the offending line and a caret under the spot."""
        head = f"{self.source}:{self.line}:{self.column}: {self.message}"
        if with_snippet and self.snippet:
            caret = " " * (self.column - 1) + "^"
            return f"{head}\n    {self.snippet}\n    {caret}"
        return head


class PolicyError(GuardrailError):
    """A policy is invalid. ``problems`` lists every problem found, each with its file position."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(p.format(with_snippet=True) for p in self.problems))


class ConfigurationError(GuardrailError, ValueError):
    """The guard's parts do not fit together, e.g. a policy names a view provider the guard does not have."""


class InputError(GuardrailError, ValueError):
    """A request, image or data file is malformed."""


class ImageError(InputError):
    """An image cannot be decoded safely (missing, not an image, truncated, empty, or too large)."""


class BackendError(GuardrailError):
    """A model call failed."""


class BackendTimeout(BackendError, TimeoutError):
    """A model call did not answer within the remaining budget."""


class WorkerLimitError(BackendError):
    """A model call could not start: too many earlier calls that outlived their budget still hold threads."""


class EstimatorError(GuardrailError):
    """Confidence signals could not be computed for a generation."""


class CalibrationError(GuardrailError):
    """A calibrator is unfitted, was given bad input, or failed."""


class ArtifactError(GuardrailError):
    """A saved artifact is corrupt, truncated, of an unsupported version, or was fitted on another model."""


class ViewProviderError(GuardrailError):
    """A view provider failed or returned no usable image."""


class UncalibratedWarning(UserWarning):
    """A guard was built without a calibration: its confidences are the estimator's raw scores, not probabilities.

    Raised as a warning (never an error) when such a guard is constructed and its policy has not opted in to raw
    scores (``accept_uncalibrated: true``, or ``Guard(..., allow_uncalibrated=True)``): every answer then ends in the
    policy's ``on_uncalibrated`` action instead of being accepted. The message says how to calibrate.
    """
