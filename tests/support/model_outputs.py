"""Comparing what a model produced in two runs: the one notion of "the same model output" for the tests.

Two runs of one model (another load, batch shape, thread count, CPU, sync or async, batched or alone, kept row 0
or re-scored) give the same token ids and text, but floats that may differ in their last bits. So
:func:`assert_same_model_output` walks two results of any shape (pydantic models, dataclasses, mappings, sequences,
tensors, arrays, numbers) and compares

- what is exact (``str``, ``bytes``, ``int``, ``bool``, ``None``, enums, integer tensors and arrays: token ids,
  texts, counts, statuses, rules, sources) exactly;
- floats and floating-point tensors and arrays within ``MODEL_OUTPUT_TOLERANCE``
  (``guardrail.backends.base``, where the value is justified), or the tolerance given;

and fails naming every place where they differ (``[2].attempts[0].signals.features['vision_kl']: ...``). Wall-clock
timings (fields and keys named ``seconds``, or ending in ``_seconds``) are skipped, as are the names in ``ignore``.
``tests/README.md`` says when to use it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pydantic
import torch

from guardrail.backends.base import MODEL_OUTPUT_TOLERANCE, FloatTolerance

__all__ = ["assert_same_model_output", "model_output_differences"]

SHOWN = 20
"""At most this many differences are listed in a failure (the count says how many there were)."""


def _skipped(name: str, ignore: Collection[str]) -> bool:
    return name in ignore or name == "seconds" or name.endswith("_seconds")


def _fields(value: Any) -> dict[str, Any] | None:
    """A pydantic model's or a dataclass's fields by name (excluded ones included), else ``None``."""
    if isinstance(value, pydantic.BaseModel):
        return {name: getattr(value, name) for name in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    return None


def _float_array(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], tolerance: FloatTolerance, where: str) -> list[str]:
    x, y = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(x) & np.isfinite(y)
        gap = np.where(finite, np.abs(x - y), 0.0)
        allowed = tolerance.absolute + tolerance.relative * np.maximum(np.abs(x), np.abs(y))
        close = (x == y) | (np.isnan(x) & np.isnan(y)) | (finite & (gap <= allowed))
    if bool(close.all()):
        return []
    far = np.argwhere(~close)
    first = tuple(int(i) for i in far[0])
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(np.where(close, -1.0, gap))), gap.shape))
    return [
        f"{where}: {len(far)} of {x.size} values differ beyond {tolerance}; first at {list(first)}: "
        f"{x[first].item()!r} != {y[first].item()!r}; largest at {list(worst)}: {x[worst].item()!r} != "
        f"{y[worst].item()!r} "
        f"(by {abs(x[worst] - y[worst]):.3g})"
    ]


def _arrays(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], tolerance: FloatTolerance, where: str) -> list[str]:
    if a.shape != b.shape or a.dtype != b.dtype:
        return [f"{where}: shape {a.shape} {a.dtype} != {b.shape} {b.dtype}"]
    if np.issubdtype(a.dtype, np.floating):
        return _float_array(a, b, tolerance, where)
    if np.array_equal(a, b):
        return []
    first = tuple(int(i) for i in np.argwhere(a != b)[0])
    return [f"{where}: {int((a != b).sum())} of {a.size} values differ (compared exactly); first at {list(first)}: "
            f"{a[first].item()!r} != {b[first].item()!r}"]  # fmt: skip


def _differences(
    a: Any, b: Any, where: str, tolerance: FloatTolerance, ignore: Collection[str], found: list[str]
) -> None:
    a, b = (x.item() if isinstance(x, np.generic) else x for x in (a, b))  # numpy scalars as Python numbers
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            found.append(f"{where}: {type(a).__name__} != {type(b).__name__}")
            return
        if a.dtype != b.dtype:
            found.append(f"{where}: dtype {a.dtype} != {b.dtype}")
            return
        x, y = a.detach().cpu(), b.detach().cpu()
        if x.is_floating_point():  # numpy has no bfloat16; float64 holds every float dtype exactly
            x, y = x.double(), y.double()
        found.extend(_arrays(x.numpy(), y.numpy(), tolerance, where))
        return
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        found.extend(_arrays(np.asarray(a), np.asarray(b), tolerance, where))
        return
    if type(a) is not type(b) and not _both_numbers(a, b):
        found.append(f"{where}: {type(a).__name__} {a!r} != {type(b).__name__} {b!r}")
        return
    fields = _fields(a)
    if fields is not None:
        other = _fields(b)
        assert other is not None
        for name, value in fields.items():
            if not _skipped(name, ignore):
                _differences(value, other[name], f"{where}.{name}", tolerance, ignore, found)
        return
    if isinstance(a, Mapping):
        if set(a) != set(b):
            only_left, only_right = (
                ", ".join(sorted(map(repr, keys))) or "none" for keys in (set(a) - set(b), set(b) - set(a))
            )
            found.append(f"{where}: keys only on the left {only_left}, only on the right {only_right}")
        for key in a:
            if key in b and not (isinstance(key, str) and _skipped(key, ignore)):
                _differences(a[key], b[key], f"{where}[{key!r}]", tolerance, ignore, found)
        return
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            found.append(f"{where}: {len(a)} items != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _differences(x, y, f"{where}[{i}]", tolerance, ignore, found)
        return
    if isinstance(a, float) or isinstance(b, float):
        if not tolerance.close(float(a), float(b)):
            gap = abs(float(a) - float(b))
            found.append(f"{where}: {a!r} != {b!r} (by {gap:.3g}, beyond {tolerance})")
        return
    if a != b:  # str, bytes, int, bool, None, enums, sets: exact
        found.append(f"{where}: {a!r} != {b!r} (compared exactly)")


def _both_numbers(a: Any, b: Any) -> bool:
    """An int and a float (as JSON may give ``1`` for ``1.0``) compare as numbers; a bool is never a number here."""
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, (bool, enum.Enum))
        and not isinstance(b, (bool, enum.Enum))
    )


def model_output_differences(
    left: Any,
    right: Any,
    *,
    tolerance: FloatTolerance = MODEL_OUTPUT_TOLERANCE,
    ignore: Collection[str] = (),
    name: str = "",
) -> list[str]:
    """Every place where ``left`` and ``right`` differ (see the module docstring); empty when they are the same."""
    found: list[str] = []
    _differences(left, right, name or "output", tolerance, ignore, found)
    return found


def assert_same_model_output(
    left: Any,
    right: Any,
    *,
    tolerance: FloatTolerance = MODEL_OUTPUT_TOLERANCE,
    ignore: Collection[str] = (),
    name: str = "",
) -> None:
    """Fail, naming where, unless ``left`` and ``right`` are the same model output: exact values equal, floats
    within ``tolerance`` (by default ``MODEL_OUTPUT_TOLERANCE``). ``ignore``: field or key names skipped at any
    depth (besides timings); ``name``: what the values are, for the message (``output`` by default)."""
    found = model_output_differences(left, right, tolerance=tolerance, ignore=ignore, name=name)
    if found:
        more = f"\n  ... and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        raise AssertionError(
            f"not the same model output ({len(found)} difference{'s' if len(found) > 1 else ''}; exact values "
            f"compared exactly, floats within {tolerance}):\n  " + "\n  ".join(found[:SHOWN]) + more
        )
