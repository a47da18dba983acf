"""Calibration data a calibrator cannot learn from is refused with what it needs; what it accepts guards new images.

Issue 27, item 5: ``guardrail calibrate`` on 3 rows wrote an artifact whose every confidence was unknown ("calibrated
on 4 answers ()"), and on 40 rows of one image, all answered right, an artifact that accepted that image at 0.999
and ended every other image in ``on_error`` (``image_shift`` was inf). The refusals are checked on synthetic scored
rows (each rule alone) and through the command on the reference model; the last test fits on small but acceptable
data and guards an image calibration never saw.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from guardrail import ImageBlock, Request
from guardrail.calibration.collect import ScoredItem
from guardrail.calibration.fit import MIN_FIT_ROWS, MIN_ROWS, check_calibration_data
from guardrail.calibration.pipeline import calibrate_rows
from guardrail.cli import _register, app
from guardrail.data.easyvqa import load_easyvqa
from guardrail.data.labelled import LabelledItem
from guardrail.errors import CalibrationError
from guardrail.pretrained import load_guard
from guardrail.types import Generation, Signals
from tests.support.calibration import easyvqa_jsonl

_register()


# -- the rules, on synthetic rows ------------------------------------------------------------------------------


def row(
    i: int,
    *,
    answer: bool,
    perception: bool | None,
    statistic: float | None = None,
    image: tuple[float, ...] | None = None,
) -> ScoredItem:
    rng = np.random.default_rng(i)
    visual, reasoning = float(rng.uniform(0.2, 0.9)), float(rng.uniform(0.2, 0.9))
    signals = Signals(
        visual=visual,
        reasoning=reasoning,
        holistic=visual * reasoning,
        features={"visual_score": float(rng.normal()) if statistic is None else statistic},
        embeddings={
            "text": tuple(rng.normal(size=6).tolist()),
            "image": image if image is not None else tuple(rng.normal(size=6).tolist()),
        },
    )
    item = LabelledItem(request=Request.from_question("q?", []), answer="a", tags={"line": str(i + 1)})
    return ScoredItem(item, Generation(text="x"), signals, "a", "x", answer, perception, None, 0.0, 0.0)


def mixed(n: int, **options: object) -> list[ScoredItem]:
    """``n`` rows, perception wrong on every fourth, the answer also wrong on every third: both classes everywhere."""
    return [row(i, answer=i % 3 != 0 and i % 4 != 0, perception=i % 4 != 0, **options) for i in range(n)]  # type: ignore[arg-type]


def fit(rows: list[ScoredItem]) -> object:
    return calibrate_rows(rows, model_fingerprint="sha256:m", data_fingerprint="sha256:d", part_calibrator="platt")


def test_mixed_rows_are_accepted() -> None:
    artifact = fit(mixed(60))
    assert artifact.familiarity is not None  # type: ignore[attr-defined]
    assert set(artifact.metrics) == {"visual", "reasoning", "overall"}  # type: ignore[attr-defined]


def test_too_few_rows_are_refused_naming_the_minimum() -> None:
    with pytest.raises(CalibrationError) as refused:
        fit(mixed(8))
    message = str(refused.value)
    assert message.startswith("cannot calibrate on this data: visual (is the perception right?) has 8 labelled rows")
    assert f"it needs at least {MIN_ROWS} (half fit its calibrator, half certify)" in message
    assert "overall (is the answer right?) has 8 labelled rows" in message


@pytest.mark.parametrize("answer", [True, False])
def test_one_class_only_is_refused(answer: bool) -> None:
    rows = [row(i, answer=answer, perception=answer) for i in range(40)]
    with pytest.raises(CalibrationError) as refused:
        fit(rows)
    message = str(refused.value)
    counts = "40 right and 0 wrong" if answer else "0 right and 40 wrong"
    assert f"visual (is the perception right?) has 40 labelled rows, {counts}" in message
    assert "would give every answer the same confidence; it needs right and wrong ones" in message
    assert f"overall (is the answer right?) has 40 labelled rows, {counts}" in message


def test_reasoning_errors_are_needed_among_rows_of_right_perception() -> None:
    # Every wrong answer comes from wrong perception: nothing tells the reasoning calibrator what a reasoning
    # error looks like.
    rows = [row(i, answer=i % 4 != 0, perception=i % 4 != 0) for i in range(40)]
    with pytest.raises(CalibrationError, match=r"reasoning \(is the answer right, given right perception\?\) has 30 "
                       r"labelled rows, 30 right and 0 wrong"):  # fmt: skip
        fit(rows)


def test_one_class_in_the_half_the_calibrator_is_fitted_on_is_refused() -> None:
    y = np.ones(MIN_ROWS * 2)
    y[[0, 1]] = 0.0
    scores = np.full(y.shape, 0.5)
    fit_rows = np.arange(2, y.size, 2)  # the two wrong answers both fall in the certify half
    expected = (
        r"the half of the rows its calibrator is fitted on \(drawn by the seed\) has 19, 19 right and 0 wrong; "
        r"it needs at least 10 with right and wrong ones"
    )
    with pytest.raises(CalibrationError, match=expected):
        check_calibration_data(visual_scores=scores, reasoning_scores=scores, answer_correct=y, fit_rows=fit_rows)
    check_calibration_data(visual_scores=scores, reasoning_scores=scores, answer_correct=y, fit_rows=np.arange(20))
    assert MIN_FIT_ROWS == 10


def test_without_perception_labels_visual_is_not_required() -> None:
    rows = [row(i, answer=i % 3 != 0, perception=None) for i in range(40)]
    artifact = fit(rows)
    assert "visual" not in artifact.metrics  # type: ignore[attr-defined]


def test_images_that_do_not_vary_are_refused() -> None:
    same = tuple(np.random.default_rng(99).normal(size=6).tolist())
    with pytest.raises(CalibrationError, match=r"all \d+ images the familiarity reference is fitted on look the "
                       r"same to the model \(their input features do not vary\)"):  # fmt: skip
        fit(mixed(40, image=same))


def test_an_infinite_statistic_is_refused_naming_its_line() -> None:
    rows = mixed(40)
    rows[6] = row(6, answer=True, perception=True, statistic=math.inf)
    with pytest.raises(CalibrationError, match=r"the visual statistic s is infinite on 1 of 40 rows \(the first: "
                       r"line 7 of the data\)"):  # fmt: skip
        fit(rows)


def test_a_statistic_equal_on_every_row_is_refused() -> None:
    with pytest.raises(CalibrationError, match=r"the visual statistic s is 2.5 on every one of its 40 rows"):
        fit(mixed(40, statistic=2.5))


# -- the command, on the reference model -----------------------------------------------------------------------


def calibrate(data: Path, out: Path) -> tuple[int, str, float]:
    start = time.monotonic()
    result = CliRunner().invoke(app, ["calibrate", "--data", str(data), "--out", str(out), "--batch-size", "8"])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr, time.monotonic() - start


def test_three_rows_are_refused_before_the_model_loads(tmp_path: Path) -> None:
    data = easyvqa_jsonl(tmp_path, 3, same_image=False, mislabel=False)
    code, err, seconds = calibrate(data, tmp_path / "calibration.json")
    assert code == 2
    assert err == (
        f"error: cannot calibrate on {data}: it holds 3 labelled items; calibration needs at least 20 (half fit the "
        "calibrators, at least 10 for each component, half certify its thresholds and measure it), and right and "
        "wrong answers among them\n"
    )
    assert seconds < 10  # no model loaded, nothing scored
    assert not (tmp_path / "calibration.json").exists()


def test_forty_right_answers_about_one_image_are_refused_without_an_artifact(tmp_path: Path) -> None:
    data = easyvqa_jsonl(tmp_path, 40, same_image=True, mislabel=False)
    code, err, _ = calibrate(data, tmp_path / "calibration.json")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: cannot calibrate on this data: visual (is the perception right?) has 40 "
                                "labelled rows, 40 right and 0 wrong")  # fmt: skip
    assert "Traceback" not in err
    assert not (tmp_path / "calibration.json").exists()


def test_an_artifact_fitted_on_small_acceptable_data_guards_a_new_image(tmp_path: Path) -> None:
    data = easyvqa_jsonl(tmp_path, 40, same_image=False, mislabel=True)
    out = tmp_path / "calibration.json"
    code, err, _ = calibrate(data, out)
    assert code == 0, err
    guard = load_guard(artifact=out)
    fresh = load_easyvqa("test")[:3]  # images calibration never saw
    for number, example in enumerate(fresh):
        path = tmp_path / f"new-{number}.png"
        example.image().save(path)
        result = guard.run(Request.from_question(example.question, [ImageBlock.from_path(path)]))
        assert result.error is None, result.error
        assert result.final_decision.rule != "on_error"
        confidence = result.confidence
        assert confidence is not None
        for name in ("visual", "reasoning", "overall", "familiarity"):
            value = confidence.get(name)
            assert value is not None, name
            assert 0.0 <= value <= 1.0, (name, value)
        shift = result.attempts[-1].signals.features["image_shift"]  # type: ignore[union-attr]
        assert math.isfinite(shift)
