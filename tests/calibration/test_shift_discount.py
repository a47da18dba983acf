"""Shift discounts: confidence falls as an input moves away from the calibration data, learned from the data."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail.calibration.decoupled import DecoupledCalibrator, ShiftDiscount
from guardrail.calibration.metrics import expected_calibration_error
from guardrail.errors import CalibrationError
from guardrail.types import Signals


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.asarray(np.log(p) - np.log1p(-p))


def _data(n: int, seed: int, strength: float = 2.0) -> dict[str, np.ndarray]:
    """Raw scores that are calibrated in distribution (x = 0) and over-confident as the shift x grows."""
    rng = np.random.default_rng(seed)
    v, r = rng.uniform(0.3, 0.99, n), rng.uniform(0.3, 0.99, n)
    x = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(1.0, n))
    perception = (rng.random(n) < _sigmoid(_logit(v) - strength * x)).astype(float)
    reasoning = (rng.random(n) < _sigmoid(_logit(r) - strength * x)).astype(float)
    return {"v": v, "r": r, "x": x, "perception": perception, "answer": perception * reasoning}


def _fit(d: dict[str, np.ndarray], *, covariates: bool) -> DecoupledCalibrator:
    return DecoupledCalibrator(visual="platt", reasoning="platt").fit(
        d["v"],
        d["r"],
        answer_correct=d["answer"],
        perception_correct=d["perception"],
        covariates={"image_shift": d["x"]} if covariates else None,
    )


def test_the_discount_is_learned_and_repairs_calibration_under_shift() -> None:
    train, test = _data(4000, 0), _data(20000, 1)
    shifted = test["x"] > 0.5
    plain, aware = _fit(train, covariates=False), _fit(train, covariates=True)
    assert aware.shift_["visual"].coef[aware.shift_["visual"].names.index("image_shift")] > 1.0
    with_shift = aware.predict_components(test["v"], test["r"], covariates={"image_shift": test["x"]})
    without = plain.predict_components(test["v"], test["r"])
    for component, labels in (("visual", test["perception"]), ("overall", test["answer"])):
        ece_aware = expected_calibration_error(with_shift[component][shifted], labels[shifted], n_bins=10)
        ece_plain = expected_calibration_error(without[component][shifted], labels[shifted], n_bins=10)
        assert ece_aware < 0.05 < ece_plain, (component, ece_aware, ece_plain)


def test_confidence_never_rises_with_shift() -> None:
    calibrator = _fit(_data(3000, 2), covariates=True)
    x = np.linspace(0.0, 5.0, 30)
    out = calibrator.predict_components(np.full(30, 0.9), np.full(30, 0.9), covariates={"image_shift": x})
    for component in ("visual", "reasoning", "overall"):
        assert np.all(np.diff(out[component]) <= 1e-12), component


def test_a_covariate_that_never_varies_changes_nothing() -> None:
    d = _data(3000, 3, strength=0.0)
    d["x"] = np.zeros_like(d["x"])
    aware = _fit(d, covariates=True)
    plain = _fit(d, covariates=False)
    assert all(b == pytest.approx(0.0, abs=1e-6) for b in aware.shift_["visual"].coef)
    a = aware.predict_components(d["v"][:50], d["r"][:50], covariates={"image_shift": d["x"][:50]})
    b = plain.predict_components(d["v"][:50], d["r"][:50])
    assert np.allclose(a["visual"], b["visual"], atol=0.02)


def test_unmeasured_covariates_are_not_discounted_and_unknown_names_are_refused() -> None:
    calibrator = _fit(_data(2000, 4), covariates=True)
    base = calibrator.predict_components([0.9], [0.9], covariates={"image_shift": [0.0]})
    missing = calibrator.predict_components([0.9], [0.9], covariates={"image_shift": [np.nan]})
    assert missing["overall"][0] == pytest.approx(base["overall"][0])
    with pytest.raises(CalibrationError, match="unknown covariates"):
        calibrator.predict_components([0.9], [0.9], covariates={"weather": [1.0]})
    with pytest.raises(CalibrationError, match=">= 0"):
        calibrator.predict_components([0.9], [0.9], covariates={"image_shift": [-1.0]})


def test_calibrate_reads_the_covariates_from_the_features_and_passes_familiarity_through() -> None:
    calibrator = _fit(_data(2000, 5), covariates=True)
    near = calibrator.calibrate(Signals(visual=0.9, reasoning=0.9, familiarity=0.4, features={"image_shift": 0.0}))
    far = calibrator.calibrate(Signals(visual=0.9, reasoning=0.9, familiarity=0.001, features={"image_shift": 3.0}))
    assert far.overall is not None
    assert near.overall is not None
    assert far.overall < near.overall - 0.3
    assert far.familiarity == 0.001
    assert "shift_discount" in far.sources["overall"]
    assert near.sources["familiarity"] == ("familiarity",)


def test_round_trip_keeps_the_discounts_and_older_dicts_still_load() -> None:
    calibrator = _fit(_data(2000, 6), covariates=True)
    again = DecoupledCalibrator.from_dict(calibrator.to_dict())
    x = {"image_shift": np.array([0.0, 1.0, 4.0])}
    a = calibrator.predict_components([0.8, 0.8, 0.8], [0.7, 0.7, 0.7], covariates=x)
    b = again.predict_components([0.8, 0.8, 0.8], [0.7, 0.7, 0.7], covariates=x)
    assert all(np.allclose(a[k], b[k]) for k in a)
    old = calibrator.to_dict()
    del old["fitted"]["shift"]
    assert DecoupledCalibrator.from_dict(old).shift_ == {}
    bad = calibrator.to_dict()
    bad["fitted"]["shift"]["visual"]["coef"] = [-1.0, 0.0][: len(bad["fitted"]["shift"]["visual"]["names"])]
    with pytest.raises(CalibrationError, match="shift discount"):
        DecoupledCalibrator.from_dict(bad)


def test_shift_discount_alone() -> None:
    p = np.full(1000, 0.9)
    x = np.linspace(0, 3, 1000)[:, None]
    y = (np.random.default_rng(0).random(1000) < _sigmoid(np.log(9.0) - 1.5 * x[:, 0])).astype(float)
    discount = ShiftDiscount(["image_shift"]).fit(p, x, y)
    assert discount.coef[0] == pytest.approx(1.5, abs=0.5)
    assert ShiftDiscount.from_dict(discount.to_dict()).coef == discount.coef


def test_an_input_without_shift_keeps_its_calibrated_confidence_exactly() -> None:
    calibrator = _fit(_data(3000, 7), covariates=True)
    assert all(d.intercept == 0.0 for d in calibrator.shift_.values())
    plain = DecoupledCalibrator.from_dict({**calibrator.to_dict()})
    plain.shift_ = {}
    v, r = np.array([0.6, 0.8, 0.95]), np.array([0.7, 0.9, 0.5])
    with_zero = calibrator.predict_components(v, r, covariates={"image_shift": np.zeros(3)})
    without = plain.predict_components(v, r)
    assert all(np.allclose(with_zero[k], without[k]) for k in with_zero)


def test_discount_only_rows_teach_the_discount_but_not_the_calibrators() -> None:
    d = _data(3000, 8)
    extra = _data(1000, 9, strength=4.0)
    extra["x"] = extra["x"] + 2.0  # made unfamiliar on purpose, and much worse for it
    both = {k: np.concatenate([d[k], extra[k]]) for k in d}
    marks = np.concatenate([np.zeros(3000), np.ones(1000)])
    fitted = DecoupledCalibrator(visual="platt", reasoning="platt").fit(
        both["v"], both["r"], answer_correct=both["answer"], perception_correct=both["perception"],
        covariates={"image_shift": both["x"]}, discount_only=marks,
    )  # fmt: skip
    alone = _fit(d, covariates=False)
    grid = np.linspace(0.3, 0.99, 20)
    assert np.allclose(fitted.visual_.predict(grid), alone.visual_.predict(grid))  # type: ignore[union-attr]
    assert fitted.shift_["visual"].coef[fitted.shift_["visual"].names.index("image_shift")] > 0.2


def _grouped(n: int, seed: int, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Groups "a", "b" calibrated; any other group over-confident in proportion to its covariate (its damage)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(kinds), n)
    v, r = rng.uniform(0.3, 0.99, n), rng.uniform(0.3, 0.99, n)
    damaged = ~np.isin(group, ["a", "b"])
    x = np.where(damaged, rng.uniform(0.5, 1.5, n), rng.exponential(0.05, n))
    perception = (rng.random(n) < _sigmoid(_logit(v) - 2.0 * damaged * x)).astype(float)
    reasoning = (rng.random(n) < _sigmoid(_logit(r))).astype(float)
    return {"v": v, "r": r, "x": x, "group": group, "perception": perception, "answer": perception * reasoning}


def test_cross_fitting_by_group_learns_what_an_unseen_group_costs() -> None:
    """In-sample, the calibrators fit the damaged group itself, so its rows look nearly calibrated and the discount
    learns little; cross-fitted, each group is calibrated by a fit that never saw it, as an unseen kind of damage
    would be, and the discount learns the cost of the damage its covariate measures (the true cost is 2 per unit).
    Whether that helps on damage unlike every calibration group is an empirical question: ``bench/shift.py``
    measures it (``without_cross_fit``)."""
    train = _grouped(6000, 0, ("a", "b", "c"))

    def fit(groups: bool) -> DecoupledCalibrator:
        return DecoupledCalibrator(visual="isotonic", reasoning="isotonic").fit(
            train["v"],
            train["r"],
            answer_correct=train["answer"],
            perception_correct=train["perception"],
            covariates={"stability_drop": train["x"]},
            groups=list(train["group"]) if groups else None,
        )

    in_sample, cross = fit(False), fit(True)
    coef = {name: c.shift_["visual"].coef[c.shift_["visual"].names.index("stability_drop")]
            for name, c in (("in", in_sample), ("cross", cross))}  # fmt: skip
    assert coef["cross"] > coef["in"] + 0.3, coef
    assert 1.0 < coef["cross"] < 3.0, coef
    assert any("cross-fitted over 3 groups" in note for note in cross.notes_)
    # the calibrators used at predict time are fitted on every row either way: without shift they agree
    test = _grouped(2000, 1, ("a",))
    none = {"stability_drop": np.zeros(len(test["v"]))}
    np.testing.assert_allclose(
        in_sample.predict_components(test["v"], test["r"], covariates=none)["visual"],
        cross.predict_components(test["v"], test["r"], covariates=none)["visual"],
        atol=1e-12,
    )


def test_one_group_or_none_fits_in_sample_and_groups_must_match_the_rows() -> None:
    d = _grouped(800, 2, ("a", "b", "c"))

    def fit(groups: list[str] | None) -> DecoupledCalibrator:
        return DecoupledCalibrator(visual="platt", reasoning="platt").fit(
            d["v"], d["r"], answer_correct=d["answer"], perception_correct=d["perception"],
            covariates={"stability_drop": d["x"]}, groups=groups,
        )  # fmt: skip

    assert fit(None).to_dict() == fit(["x"] * 800).to_dict()
    with pytest.raises(CalibrationError, match="one group per row"):
        fit(["a"])
