"""``MODEL_OUTPUT_TOLERANCE``: when two floats a model computed in two runs are the same output (issue 26)."""

from __future__ import annotations

import math

import pytest

from guardrail.backends.base import ENGINE_OUTPUT_TOLERANCE, MODEL_OUTPUT_TOLERANCE, FloatTolerance


def test_the_values_and_how_they_read() -> None:
    assert (MODEL_OUTPUT_TOLERANCE.absolute, MODEL_OUTPUT_TOLERANCE.relative) == (1e-5, 1e-4)
    assert str(MODEL_OUTPUT_TOLERANCE) == "1e-05 absolute + 0.0001 relative"
    assert ENGINE_OUTPUT_TOLERANCE.absolute >= MODEL_OUTPUT_TOLERANCE.absolute  # another engine never stricter
    assert ENGINE_OUTPUT_TOLERANCE.relative >= MODEL_OUTPUT_TOLERANCE.relative


def test_two_loads_of_the_same_weights_are_the_same_output() -> None:
    # issue 26: one log-prob of the reference model, loaded twice on an AMD EPYC
    assert MODEL_OUTPUT_TOLERANCE.close(-0.05502515658736229, -0.05502504110336304)
    assert MODEL_OUTPUT_TOLERANCE.close(-0.05502504110336304, -0.05502515658736229)  # symmetric


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (0.0, 0.0, True),
        (0.0, 9e-6, True),  # the absolute part
        (0.0, 1.1e-5, False),
        (-20.0, -20.0019, True),  # the relative part: 1e-5 + 20 * 1e-4 allowed
        (-20.0, -20.0021, False),
        (-0.055, -0.0551, False),  # a real change in a log-prob
        (0.5, 0.5 + 2e-5, True),
        (0.5, 0.5 + 1e-4, False),
        (math.nan, math.nan, True),  # not a number both times: the same output
        (math.nan, 0.0, False),
        (math.inf, math.inf, True),
        (-math.inf, -math.inf, True),
        (math.inf, 1e300, False),
        (-math.inf, math.inf, False),
    ],
)
def test_close(a: float, b: float, same: bool) -> None:
    assert MODEL_OUTPUT_TOLERANCE.close(a, b) is same
    assert MODEL_OUTPUT_TOLERANCE.close(b, a) is same


def test_allowed_grows_with_the_larger_value() -> None:
    tolerance = FloatTolerance(absolute=1e-3, relative=0.1)
    assert tolerance.allowed(0.0, 0.0) == 1e-3
    assert tolerance.allowed(-2.0, 1.0) == pytest.approx(0.201)
    assert tolerance.close(1.0, 1.1)
    assert not tolerance.close(1.0, 1.2)
