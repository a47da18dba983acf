"""The optional parts of the install, and the clear ImportError that names the extra a missing module comes with.

``pip install lvlm-guardrail`` is the light install: the guard, policies, remote backends (OpenAI-compatible
servers, LangChain chat models), the black-box estimator, applying a fitted calibration artifact, integrations and
telemetry, on NumPy and Pillow alone, without torch, transformers or SciPy. What needs more comes with an extra:

- ``local``: models in process (``TransformersBackend``, ``DecoupledEstimator``, the reference model, ``guardrail
  demo``, ``guardrail calibrate --model``): torch, transformers, safetensors, and everything of ``calibrate``;
- ``calibrate``: fitting calibrators and artifacts, certified thresholds, calibration reports and their plots, the
  easy-VQA data: SciPy, scikit-learn, Matplotlib, easy-vqa.

Modules that need an extra import it through :func:`require`, or import under :func:`needs` (the lazy entry points
of ``TransformersBackend`` and ``DecoupledEstimator``), so that a user without it reads which extra to install
rather than "No module named 'scipy'".

>>> install_hint("calibrate", "fitting a calibrator")
"fitting a calibrator needs the `calibrate` extra: pip install 'lvlm-guardrail[calibrate]'"
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Literal

__all__ = ["EXTRAS", "Extra", "install_hint", "missing", "needs", "require"]

Extra = Literal["local", "calibrate"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "local": ("torch", "transformers", "safetensors", "scipy", "sklearn", "matplotlib", "easy_vqa"),
    "calibrate": ("scipy", "sklearn", "matplotlib", "easy_vqa"),
}
"""The top-level modules each extra brings (import names, not distribution names)."""


def install_hint(extra: Extra, feature: str) -> str:
    """The message of a missing extra: what needs it, and the command that installs it."""
    if extra not in EXTRAS:
        raise ValueError(f"`extra` must be one of {sorted(EXTRAS)}, got {extra!r}")
    return f"{feature} needs the `{extra}` extra: pip install 'lvlm-guardrail[{extra}]'"


def missing(exc: ModuleNotFoundError, extra: Extra, feature: str) -> ImportError:
    """The ImportError to raise ``from exc`` where ``exc`` says a module of ``extra`` is missing; ``exc`` itself
    where another module is (a broken install is not a missing extra: re-raise it as it is)."""
    top = (exc.name or "").partition(".")[0]
    if top not in EXTRAS[extra]:
        return exc
    return ImportError(f"{install_hint(extra, feature)} ({exc.name!r} is not installed)", name=exc.name)


def require(module: str, *, extra: Extra, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"scipy.optimize"``); where it is not installed, an ImportError naming ``extra``.

    ``feature`` says what needs it, in the words of the message (``"fitting a calibrator"``).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        error = missing(exc, extra, feature)
        if error is exc:
            raise
        raise error from exc


@contextlib.contextmanager
def needs(extra: Extra, feature: str) -> Iterator[None]:
    """Imports in the block that miss a module of ``extra`` raise the ImportError naming it (others unchanged)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing(exc, extra, feature)
        if error is exc:
            raise
        raise error from exc
