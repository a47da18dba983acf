"""``tests.support.model_outputs``: the tests' one notion of "the same model output" must itself fail on a real
difference, pass within the tolerance, and say where two outputs differ."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from guardrail import Confidence, Generation, Signals
from guardrail.backends import TeacherForcedScores
from guardrail.backends.base import MODEL_OUTPUT_TOLERANCE, FloatTolerance
from tests.support.model_outputs import assert_same_model_output, model_output_differences

DRIFT = -0.05502504110336304 - -0.05502515658736229  # issue 26: two loads of the same weights


def generation(
    first: float = -0.05502515658736229, *, ids: tuple[int, ...] = (5, 6, 7), seconds: float = 0.1
) -> Generation:
    return Generation(
        text=r"\boxed{triangle}", token_ids=ids, token_logprobs=(-0.25, first, -1e-4), seconds=seconds, model="m"
    )


def test_the_same_output_passes() -> None:
    assert model_output_differences(generation(), generation()) == []
    assert_same_model_output([generation()], [generation()])


def test_floats_within_the_tolerance_pass_and_timings_are_skipped() -> None:
    assert_same_model_output(generation(), generation(-0.05502515658736229 + DRIFT, seconds=7.5))
    assert_same_model_output({"a": [1.0, 2.0]}, {"a": [1.0 + 9e-6, 2.0 - 9e-6]})
    assert_same_model_output({"run_seconds": 1.0, "x": 0.5}, {"run_seconds": 2.0, "x": 0.5})


def test_a_real_difference_in_a_float_fails_and_says_where() -> None:
    with pytest.raises(AssertionError) as failure:
        assert_same_model_output([generation(), generation()], [generation(), generation(-0.0551)], name="answers")
    message = str(failure.value)
    assert message.startswith("not the same model output (1 difference; exact values compared exactly, floats ")
    assert f"within {MODEL_OUTPUT_TOLERANCE}" in message
    assert "answers[1].token_logprobs[1]: -0.05502515658736229 != -0.0551 (by 7.48e-05, beyond " in message


@pytest.mark.parametrize(
    ("left", "right", "where"),
    [
        (generation(), generation(ids=(5, 6, 8)), "output.token_ids[2]: 7 != 8 (compared exactly)"),
        (generation(), generation(ids=(5, 6)), "output.token_ids: 3 items != 2"),
        ({"status": "accepted"}, {"status": "abstained"}, "output['status']: 'accepted' != 'abstained'"),
        ({"n": 3}, {"n": 4}, "output['n']: 3 != 4 (compared exactly)"),
        ([True], [1], "output[0]: bool True != int 1"),
        ([b"\x00"], [b"\x01"], "output[0]: b'\\x00' != b'\\x01' (compared exactly)"),
        ([0.5], [None], "output[0]: float 0.5 != NoneType None"),
        ([0.5], [math.nan], "output[0]: 0.5 != nan"),
        ([1e6], [math.inf], "output[0]: 1000000.0 != inf"),
        ({"a": 1.0}, {"b": 1.0}, "output: keys only on the left 'a', only on the right 'b'"),
    ],
)
def test_exact_values_are_compared_exactly(left: object, right: object, where: str) -> None:
    (difference,) = model_output_differences(left, right)
    assert difference.startswith(where)
    with pytest.raises(AssertionError, match="not the same model output"):
        assert_same_model_output(left, right)


def test_ints_and_floats_compare_as_numbers() -> None:
    assert model_output_differences([1], [1.0 + 1e-7]) == []  # JSON may write 1.0 as 1
    assert model_output_differences([1], [1.5]) != []


def test_signals_compare_features_sources_problems_and_embeddings() -> None:
    signals = Signals(
        visual=0.4,
        features={"vision_kl": 0.02, "visual_score": -1.5},
        sources={"visual": ("vision_kl",)},
        embeddings={"text": (0.5, -2.0)},
    )
    close = signals.model_copy(
        update={"visual": 0.4 + 2e-7, "features": {"vision_kl": 0.02 + 1e-7, "visual_score": -1.5 - 3e-6}}
    )
    assert_same_model_output(signals, close)
    far = signals.model_copy(update={"embeddings": {"text": (0.5, -2.01)}, "sources": {"visual": ("entropy",)}})
    assert model_output_differences(signals, far) == [
        "output.sources['visual'][0]: 'vision_kl' != 'entropy' (compared exactly)",
        "output.embeddings['text'][1]: -2.0 != -2.01 (by 0.01, beyond 1e-05 absolute + 0.0001 relative)",
    ]
    unmeasured = Confidence(visual=None, reasoning=0.3)
    assert model_output_differences(Confidence(visual=0.2, reasoning=0.3), unmeasured) == [
        "output.visual: float 0.2 != NoneType None"
    ]


def test_tensors_and_arrays() -> None:
    rows = torch.tensor([[-0.25, -0.055], [-1.0, -3.0]])
    scores = TeacherForcedScores(token_logprobs=rows, prompt_unknown=0)
    assert_same_model_output(scores, TeacherForcedScores(token_logprobs=rows + 1e-7, prompt_unknown=0))
    moved = rows.clone()
    moved[1, 0] = -1.01
    assert model_output_differences(scores, TeacherForcedScores(token_logprobs=moved, prompt_unknown=0)) == [
        "output.token_logprobs: 1 of 4 values differ beyond 1e-05 absolute + 0.0001 relative; first at [1, 0]: "
        "-1.0 != -1.0099999904632568; largest at [1, 0]: -1.0 != -1.0099999904632568 (by 0.01)"
    ]
    assert model_output_differences(scores, TeacherForcedScores(token_logprobs=rows, prompt_unknown=1)) == [
        "output.prompt_unknown: 0 != 1 (compared exactly)"
    ]
    assert model_output_differences(scores, TeacherForcedScores(token_logprobs=rows, entropy=rows)) != []
    ids = torch.tensor([[1, 2, 3]])
    assert model_output_differences(ids, ids.clone()) == []
    assert model_output_differences(ids, torch.tensor([[1, 2, 4]])) == [
        "output: 1 of 3 values differ (compared exactly); first at [0, 2]: 3 != 4"
    ]
    assert model_output_differences(rows, rows.double()) == ["output: dtype torch.float32 != torch.float64"]
    assert model_output_differences(rows, rows[:1]) == [
        "output: shape (2, 2) float64 != (1, 2) float64"
    ]  # fmt: skip
    assert model_output_differences(rows, rows.tolist()) == ["output: Tensor != list"]
    assert model_output_differences(rows.to(torch.bfloat16), (rows + 1e-7).to(torch.bfloat16)) == []
    array = np.array([0.1, math.nan, math.inf], dtype=np.float32)
    assert model_output_differences(array, array.copy()) == []  # NaN and infinity where the other has them
    assert model_output_differences(array, np.array([0.1, 0.0, math.inf], dtype=np.float32)) != []
    assert model_output_differences(np.float32(0.5), 0.5 + 1e-7) == []  # numpy scalars as numbers


def test_dataclasses_ignore_and_a_looser_tolerance() -> None:
    @dataclass
    class Row:
        answer: str
        logprob: float
        elapsed: float

    a, b = Row("red", -0.1, 1.0), Row("red", -0.1003, 9.0)
    assert len(model_output_differences(a, b)) == 2
    assert model_output_differences(a, b, ignore={"elapsed"}) == [
        "output.logprob: -0.1 != -0.1003 (by 0.0003, beyond 1e-05 absolute + 0.0001 relative)"
    ]
    assert model_output_differences(a, b, ignore={"elapsed"}, tolerance=FloatTolerance(1e-3, 0.0)) == []
    assert model_output_differences(a, Row("blue", -0.1, 1.0)) == [
        "output.answer: 'red' != 'blue' (compared exactly)"
    ]  # fmt: skip


def test_many_differences_are_counted_and_the_first_ones_shown() -> None:
    with pytest.raises(AssertionError) as failure:
        assert_same_model_output(list(range(30)), [i + 1 for i in range(30)])
    message = str(failure.value)
    assert message.startswith("not the same model output (30 differences;")
    assert "output[19]: 19 != 20" in message
    assert "output[20]" not in message
    assert message.endswith("... and 10 more")
