"""Grading answers and perception, and turning scored rows into calibration columns."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail import Generation, GenerationOptions, Request, Signals
from guardrail.calibration.collect import ScoredItem, score_items, scored_arrays
from guardrail.data.labelled import LabelledItem
from guardrail.responses import answers_match, grade_perception

VOCAB = ("red", "blue", "circle", "triangle")


@pytest.mark.parametrize(
    ("text", "expected", "vocabulary", "graded"),
    [
        ("I see a red circle.", ("red", "circle"), VOCAB, True),
        ("I see a RED Circle", ("red", "circle"), VOCAB, True),
        ("I see a red or blue circle.", ("red", "circle"), VOCAB, False),  # names a second colour
        ("I see a red triangle.", ("red", "circle"), VOCAB, False),
        ("I see a circle.", ("red", "circle"), VOCAB, False),
        ("a red circle next to a blue one", ("red", "circle"), None, True),  # no vocabulary: all words present
        ("anything", None, VOCAB, None),
    ],
)
def test_grade_perception(text: str, expected: tuple[str, ...] | None, vocabulary: tuple[str, ...] | None,
                          graded: bool | None) -> None:  # fmt: skip
    assert grade_perception(text, expected, vocabulary) is graded


def test_answers_are_graded_by_the_one_rule_of_agreement() -> None:
    """Calibration grades answers as the agreement estimator compares them: case, spaces, final full stops."""
    assert answers_match(" Red ", "red")
    assert answers_match("Red.", "red")
    assert answers_match("dark  Red", "Dark red")
    assert not answers_match("reddish", "red")
    assert not answers_match("red, blue", "red")
    assert not answers_match(None, "red")


class Scripted:
    name = "scripted"

    def __init__(self) -> None:
        self.texts = iter(
            [
                "<vision>a red circle</vision><reasoning>so red</reasoning>\\boxed{red}",
                "<vision>a blue circle</vision><reasoning>so blue</reasoning>\\boxed{blue}",
                "no structure at all",
            ]
        )

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        text = next(self.texts)
        if text.startswith("no"):
            raise ConnectionError("model went away")
        return Generation(text=text)

    def estimate(self, backend: object, request: Request, generation: Generation) -> Signals:
        return Signals(visual=0.8, reasoning=0.7, features={"visual_score": -1.5})


def test_score_items_grades_and_keeps_failures() -> None:
    item = LabelledItem(request=Request.from_question("What colour?"), answer="red", perception=("red", "circle"),
                        vocabulary=VOCAB)  # fmt: skip
    model = Scripted()
    rows = score_items(model, model, [item, item, item])
    assert [r.answer_correct for r in rows] == [True, False, False]
    assert [r.perception_correct for r in rows] == [True, False, None]
    assert rows[2].error == "backend: ConnectionError: model went away"
    columns = scored_arrays(rows)
    np.testing.assert_array_equal(columns["answer_correct"], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(columns["perception_correct"], [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(columns["visual_score"], [-1.5, -1.5, np.nan])


class BatchedScripted(Scripted):
    """The same script, also answered in batches; a batch with the failing item fails as a whole."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def generate_batch(self, requests: list[Request], options: list[GenerationOptions]) -> list[Generation]:
        self.batches.append(len(requests))
        texts = [next(self.texts) for _ in requests]
        if any(t.startswith("no") for t in texts):
            raise ConnectionError("batch went away")
        return [Generation(text=t) for t in texts]


def test_batched_scoring_grades_as_one_by_one_and_a_failing_batch_fails_only_its_bad_item() -> None:
    item = LabelledItem(request=Request.from_question("What colour?"), answer="red", perception=("red", "circle"),
                        vocabulary=VOCAB)  # fmt: skip
    model = BatchedScripted()
    rows = score_items(model, model, [item, item], batch_size=2)
    assert model.batches == [2]
    assert [r.answer_correct for r in rows] == [True, False]
    assert all(r.generate_seconds >= 0 for r in rows)

    class Breaking(Scripted):
        """Every batch fails; one by one, the script's third answer (a failure) comes first."""

        def __init__(self) -> None:
            super().__init__()
            self.texts = iter(["no structure at all", "<vision>a red circle</vision>\\boxed{red}"])

        def generate_batch(self, requests: list[Request], options: list[GenerationOptions]) -> list[Generation]:
            raise ConnectionError("batch went away")

    breaking = Breaking()
    seen: list[ScoredItem] = []
    rows = score_items(breaking, breaking, [item, item], batch_size=2, on_item=seen.append)
    assert rows[0].error == "backend: ConnectionError: model went away"  # it fails alone
    assert rows[1].error is None
    assert rows[1].answer_correct
    assert seen == rows
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1"):
        score_items(model, model, [item], batch_size=0)
