"""The names of the ``Signals.features`` that cross from the estimators to the calibrators, in one place.

The confidence layer writes these keys (the familiarity reference, the stability probe, the visual probe, the
verbalized-score parsers); the calibration layer reads them (the shift discount, the verbalized blend, the stability
score) and so do policies and telemetry through the calibrated :class:`~guardrail.types.Confidence`. Typing a
key by hand on either side let the two drift apart silently (a misspelt read is just "not measured"); both sides
import the constants below instead. They are plain ``str`` constants, not enum members, so the features stay a
``dict[str, float]`` that serialises, compares and prints as before.

Per-side names (``text_shift``, ``image_shift``, ...) are built by :func:`side_feature` from :data:`SIDES`.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "FAMILIARITY",
    "IMAGE_DISTANCE",
    "IMAGE_FAMILIARITY",
    "IMAGE_SHIFT",
    "SHIFT_COVARIATES",
    "SIDES",
    "STABILITY",
    "STABILITY_DROP",
    "TEXT_DISTANCE",
    "TEXT_FAMILIARITY",
    "TEXT_SHIFT",
    "VERBALIZED_REASONING",
    "VERBALIZED_VISION",
    "VISUAL_CERTAINTY",
    "VISUAL_SCORE",
    "Side",
    "SideMeasure",
    "side_feature",
]

Side = Literal["text", "image"]
SIDES: tuple[Side, ...] = ("text", "image")
"""The two sides of an input whose features are compared with the calibration inputs (``confidence.familiarity``)."""
SideMeasure = Literal["distance", "shift", "familiarity"]

TEXT_DISTANCE: Final = "text_distance"
IMAGE_DISTANCE: Final = "image_distance"
"""How far the question's / the images' input features lie from the calibration inputs' (a Mahalanobis distance)."""
TEXT_SHIFT: Final = "text_shift"
IMAGE_SHIFT: Final = "image_shift"
"""``max(0, log(d / median reference distance))`` of each side: a covariate the calibrator discounts by."""
TEXT_FAMILIARITY: Final = "text_familiarity"
IMAGE_FAMILIARITY: Final = "image_familiarity"
"""The conformal p-value of each side's distance against held-out calibration inputs."""
FAMILIARITY: Final = "familiarity"
"""The sides' p-values combined (Bonferroni): the input's familiarity."""

STABILITY_DROP: Final = "stability_drop"
"""The percept's mean fall in log-prob under the stability probe's views (nats per token); weighed in s and
discounted by the calibrator."""
STABILITY: Final = "stability"
"""``exp(-stability_drop)``: the share of the percept's probability that survives the views."""

VISUAL_SCORE: Final = "visual_score"
"""The raw visual statistic s of the visual probe."""
VISUAL_CERTAINTY: Final = "visual_certainty"
"""s through the visual normalisation: the visual confidence before calibration."""

VERBALIZED_VISION: Final = "verbalized_vision"
VERBALIZED_REASONING: Final = "verbalized_reasoning"
"""The model's own ``<vision_confidence>`` / ``<reasoning_confidence>`` scores, in [0, 1]."""

_BY_SIDE: Final[dict[tuple[Side, SideMeasure], str]] = {
    ("text", "distance"): TEXT_DISTANCE,
    ("text", "shift"): TEXT_SHIFT,
    ("text", "familiarity"): TEXT_FAMILIARITY,
    ("image", "distance"): IMAGE_DISTANCE,
    ("image", "shift"): IMAGE_SHIFT,
    ("image", "familiarity"): IMAGE_FAMILIARITY,
}


def side_feature(side: Side, measure: SideMeasure) -> str:
    """The feature name of ``measure`` on ``side``: ``side_feature("text", "shift") == "text_shift"``."""
    return _BY_SIDE[(side, measure)]


SHIFT_COVARIATES: Final[tuple[str, ...]] = (TEXT_SHIFT, IMAGE_SHIFT, STABILITY_DROP)
"""The features a fitted calibrator discounts confidence by: how far the question and the images lie from the
calibration inputs, and how far the percept falls under the stability probe's views (not measured without the
probe, and then no discount)."""
