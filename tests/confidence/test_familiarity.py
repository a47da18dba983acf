"""The familiarity reference: distances, conformal p-values, shift covariates, and their serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail.confidence.familiarity import FamiliarityReference, FeatureReference
from guardrail.errors import CalibrationError


def _cloud(n: int, seed: int, dim: int = 16, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.1, dim)
    return rng.normal(size=(n, dim)) * scales + shift


def test_p_values_are_uniform_on_fresh_inputs_from_the_calibration_distribution() -> None:
    reference = FeatureReference.fit(_cloud(500, 0), _cloud(500, 1), components=8)
    fresh = reference.distance(_cloud(2000, 2))
    p = np.array([reference.p_value(d) for d in fresh])
    for t in (0.01, 0.05, 0.2, 0.5):
        # conformal validity: P(p <= t) <= t (up to sampling noise), and not far below it
        assert np.mean(p <= t) <= t + 0.03
        assert np.mean(p <= t) >= t - 0.05


def test_inputs_off_the_calibration_distribution_are_far_and_unfamiliar() -> None:
    reference = FeatureReference.fit(_cloud(300, 0), _cloud(300, 1))
    near, far = reference.distance(_cloud(200, 2)), reference.distance(_cloud(200, 3, shift=4.0))
    assert np.median(far) > 3 * np.median(near)
    assert max(reference.p_value(d) for d in far) == pytest.approx(1 / 301)
    assert reference.shift(float(np.median(far))) > 1.0
    assert reference.shift(reference.scale) == 0.0
    assert reference.shift(0.5 * reference.scale) == 0.0


def test_a_reference_of_identical_inputs_still_gives_a_finite_shift() -> None:
    # Issue 27: an artifact calibrated on one image repeated had a median distance of 0, and every new image's
    # shift overflowed to inf, which the calibrator refused (on_error on every valid image).
    same = np.tile(_cloud(1, 0), (20, 1))
    reference = FeatureReference.fit(same, same)
    assert reference.scale < 1e-6  # 0 up to rounding
    assert not FeatureReference.varies(same)  # calibration refuses such inputs; old artifacts must still work
    far = float(reference.distance(_cloud(1, 5)[0]))
    assert far > 1e6
    for distance in (far, 1e300, float("inf"), float(np.finfo(np.float64).max)):
        assert np.isfinite(reference.shift(distance))
        assert reference.shift(distance) > 10.0
    assert reference.shift(0.0) == 0.0
    assert np.isnan(reference.shift(float("nan")))
    assert FeatureReference.varies(_cloud(20, 0))


def test_a_direction_calibration_never_varied_along_still_counts() -> None:
    fit = _cloud(200, 0)
    fit[:, -1] = 0.0  # constant along the last axis: its variance is floored, not divided by zero
    reference = FeatureReference.fit(fit, fit[:50] + 1e-9, components=20)
    moved = fit[0].copy()
    moved[-1] = 1.0
    assert reference.distance(moved) > 50 * reference.distance(fit[0])
    assert np.isfinite(reference.distance(moved))


def test_assess_combines_the_sides_with_bonferroni() -> None:
    text = FeatureReference.fit(_cloud(100, 0, dim=4), _cloud(100, 1, dim=4))
    image = FeatureReference.fit(_cloud(100, 2, dim=6), _cloud(100, 3, dim=6))
    reference = FamiliarityReference(text=text, image=image)
    got = reference.assess({"text": _cloud(1, 4, dim=4)[0].tolist(), "image": (_cloud(1, 5, dim=6)[0] + 50).tolist()})
    assert got["image_familiarity"] == pytest.approx(1 / 101)
    assert got["familiarity"] == pytest.approx(min(1.0, 2 * min(got["text_familiarity"], got["image_familiarity"])))
    only_text = reference.assess({"text": _cloud(1, 4, dim=4)[0].tolist(), "image": None})
    assert set(only_text) == {"text_distance", "text_shift", "text_familiarity", "familiarity"}
    assert only_text["familiarity"] == only_text["text_familiarity"]
    assert reference.assess({}) == {}


def test_json_round_trip_is_exact_and_the_reference_is_bounded() -> None:
    reference = FamiliarityReference.fit({"image": _cloud(50, 0)}, {"image": _cloud(3000, 1)}, max_reference=200)
    assert reference.text is None
    assert reference.image is not None
    assert len(reference.image.reference) == 200
    again = FamiliarityReference.model_validate_json(reference.model_dump_json())
    assert again == reference
    x = _cloud(5, 9)
    assert np.allclose(again.image.distance(x), reference.image.distance(x))  # type: ignore[union-attr]


def test_bad_inputs_are_refused_with_their_problem() -> None:
    with pytest.raises(CalibrationError, match=">= 3 fit rows"):
        FeatureReference.fit(_cloud(2, 0), _cloud(5, 1))
    with pytest.raises(CalibrationError, match="dimensions differ"):
        FeatureReference.fit(_cloud(20, 0, dim=4), _cloud(5, 1, dim=5))
    with pytest.raises(CalibrationError, match="finite"):
        FeatureReference.fit(np.full((5, 3), np.nan), _cloud(5, 1, dim=3))
    reference = FeatureReference.fit(_cloud(20, 0, dim=4), _cloud(5, 1, dim=4))
    with pytest.raises(CalibrationError, match="dimension 3"):
        reference.distance(np.zeros(3))
    data = reference.model_dump()
    data["reference"] = [3.0, 1.0]
    with pytest.raises(ValueError, match="sorted"):
        FeatureReference.model_validate(data)


def test_apply_measures_signals_from_their_embeddings_and_names_the_sources() -> None:
    from guardrail.types import Signals

    reference = FamiliarityReference.fit({"image": _cloud(100, 0, dim=4)}, {"image": _cloud(100, 1, dim=4)})
    bare = Signals(visual=0.9, features={"visual_score": 1.0})
    assert reference.apply(bare) is bare
    far = Signals(visual=0.9, features={"visual_score": 1.0}, embeddings={"image": tuple([40.0] * 4)})
    applied = reference.apply(far)
    assert applied.familiarity == pytest.approx(1 / 101)
    assert applied.sources["familiarity"] == ("image_familiarity",)
    assert applied.features["visual_score"] == 1.0
    assert applied.features["image_shift"] > 1.0
    assert applied.embeddings == far.embeddings
