"""The stability probe: views that keep the scene, the features of the answer's fall under them, and their place
in the visual statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from guardrail.confidence.normalization import VisualNormalization
from guardrail.confidence.probe import visual_probe, visual_statistic
from guardrail.confidence.stability import (
    STABILITY_FAMILIES,
    StabilitySetting,
    stability_features,
    stability_view,
    stability_views,
    view_falls,
)


@pytest.fixture
def scene() -> Image.Image:
    image = Image.new("RGB", (64, 64), (235, 245, 240))
    ImageDraw.Draw(image).ellipse((20, 20, 44, 44), fill=(200, 30, 30))
    return image


@pytest.mark.parametrize("family", STABILITY_FAMILIES)
def test_views_keep_size_and_mode_change_pixels_a_little_and_repeat_for_a_seed(scene: Image.Image, family: str) -> None:
    for index in range(4):
        view = stability_view(scene, family, index, seed=3)  # type: ignore[arg-type]
        assert view.size == scene.size
        assert view.mode == "RGB"
        assert view.tobytes() == stability_view(scene, family, index, seed=3).tobytes()  # type: ignore[arg-type]
        difference = np.abs(np.asarray(view, dtype=float) - np.asarray(scene, dtype=float)).mean()
        assert 0.0 < difference < 60.0, (family, index, difference)  # changed, not destroyed
    assert stability_view(scene, family, 0, seed=3).tobytes() != stability_view(scene, family, 0, seed=4).tobytes()  # type: ignore[arg-type]


def test_a_view_keeps_the_object_where_it_was(scene: Image.Image) -> None:
    """The red disc stays (mostly) in the frame and roughly where it was, under every geometric view."""
    red = (np.asarray(scene)[..., 0] > 150) & (np.asarray(scene)[..., 1] < 120)
    for index in range(8):
        view = np.asarray(stability_view(scene, "geometric", index))
        moved = (view[..., 0] > 150) & (view[..., 1] < 120)
        assert moved.sum() > 0.6 * red.sum()
        centre = np.argwhere(moved).mean(axis=0)
        assert np.abs(centre - 32).max() < 8


def test_mixed_views_are_the_families_views_in_turn(scene: Image.Image) -> None:
    for index in range(6):
        family = ("photometric", "geometric", "noise")[index % 3]
        assert (
            stability_view(scene, "mixed", index, seed=1).tobytes()
            == stability_view(scene, family, index // 3, seed=1).tobytes()  # type: ignore[arg-type]
        )


def test_views_of_several_images_and_settings(scene: Image.Image) -> None:
    views = stability_views([scene, scene.rotate(90)], StabilitySetting(family="noise", count=3, seed=2))
    assert len(views) == 3
    assert all(len(view) == 2 for view in views)
    assert stability_views([scene], StabilitySetting()) == []  # count 0: off
    assert StabilitySetting().label == "off"
    assert StabilitySetting(family="geometric", count=4).label == "geometric x4"
    with pytest.raises(ValueError, match="`family` must be one of"):
        stability_view(scene, "upside-down", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        StabilitySetting(count=-1)


def test_features_are_the_mean_positive_fall_of_each_span() -> None:
    logp = torch.log(torch.tensor([0.9, 0.8, 0.5, 0.9]))
    logq = torch.log(torch.tensor([[0.45, 0.8, 0.5, 0.9], [0.9, 0.9, 0.25, 0.9]]))  # falls and one rise
    vision = torch.tensor([True, True, False, False])
    answer = torch.tensor([False, False, True, True])
    got = stability_features(logp, logq, vision, answer)
    # view 0: vision falls ln 2 on token 0, 0 on token 1 -> ln2 / 2; view 1: token 1 rises (counts 0) -> 0
    assert got["stability_vision_drop"] == pytest.approx(math.log(2) / 4)
    assert got["stability_vision_worst"] == pytest.approx(math.log(2) / 2)
    # answer: view 0 unchanged, view 1 token 2 halves -> ln2 / 2
    assert got["stability_answer_drop"] == pytest.approx(math.log(2) / 4)
    assert got["stability_drop"] == got["stability_vision_drop"]
    assert got["stability"] == pytest.approx(math.exp(-math.log(2) / 4))
    assert got["stability_views"] == 2
    assert view_falls(logp, logq, vision).tolist() == pytest.approx([math.log(2) / 2, 0.0])


def test_an_unmoved_percept_has_stability_one_and_an_empty_span_gives_nothing() -> None:
    logp = torch.log(torch.tensor([0.9, 0.8]))
    same = logp.expand(3, 2)
    got = stability_features(logp, same, torch.tensor([True, True]), torch.tensor([False, False]))
    assert got["stability"] == 1.0
    assert "stability_answer_drop" not in got
    nothing = stability_features(logp, same, torch.tensor([False, False]), torch.tensor([False, False]))
    assert "stability" not in nothing
    assert "stability_drop" not in nothing


def test_the_fall_lowers_s_by_its_weight() -> None:
    logp = torch.log(torch.tensor([0.9, 0.6]))
    logq = torch.log(torch.tensor([[0.3, 0.2]]))
    vision = torch.tensor([True, True])
    plain = visual_probe(logp, logq, vision, VisualNormalization(grounding_weight=0.1))
    weighed = visual_probe(
        logp, logq, vision, VisualNormalization(grounding_weight=0.1, stability_weight=4.0), stability_drop=0.25
    )
    assert weighed.features["visual_score"] == pytest.approx(plain.features["visual_score"] - 1.0)
    assert weighed.visual < plain.visual
    assert "stability_drop" in weighed.sources
    unweighed = visual_probe(logp, logq, vision, VisualNormalization(grounding_weight=0.1), stability_drop=0.25)
    assert unweighed.features["visual_score"] == plain.features["visual_score"]  # weight 0: as before the probe
    features = {**weighed.features, "stability_drop": 0.25}
    assert visual_statistic(features, 0.1, 4.0) == pytest.approx(weighed.features["visual_score"])
    assert visual_statistic(features, 0.1) == pytest.approx(plain.features["visual_score"])
