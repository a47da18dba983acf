"""How familiar an input is: distances of the model's own input features from the calibration inputs.

A calibrated confidence is only as good as the data it was calibrated on. Off that data (a question worded
unlike any calibration question, an image damaged in a way calibration never saw) the model can be confidently
wrong while every token statistic looks normal. So every white-box estimate also measures where the input lies:

- the **question**: the model's input features at the question's tokens (after the last image), mean-pooled;
- the **images**: the model's input features at the image positions (the projected vision-encoder output),
  mean-pooled.

Both come from the teacher-forced forward pass the visual probe already makes. For each side a
:class:`FeatureReference` stores the mean and the top principal directions of the calibration inputs' features;
the distance of a new input is a Mahalanobis distance in that subspace plus the scaled residual outside it. Two
numbers follow from a distance d:

- ``*_familiarity``: the conformal p-value ``(1 + #{reference distances >= d}) / (n + 1)`` against distances of
  held-out calibration inputs. On inputs like the calibration data it is uniform, so ``p <= t`` happens with
  probability at most t (the false-alarm rate of a policy rule ``familiarity below t``).
- ``*_shift``: ``max(0, log(d / median reference distance))``, a covariate the calibrator uses to lower
  confidence the further an input lies from what it was calibrated on. Computed as a difference of logarithms,
  with the median floored at :data:`_MIN_SCALE`, so that it is finite for every finite or infinite distance: an
  artifact whose inputs barely varied must still measure a new input, never fail on it. (Calibration refuses
  inputs that do not vary at all, :meth:`FeatureReference.varies`: their distances have no scale.)

The input's ``familiarity`` is the Bonferroni combination ``min(1, m * min(p_side))`` over the m sides measured,
still a valid p-value. Nothing here knows the data set or the model: it works on any feature vectors. Plain numpy,
so that artifacts load without the model stack.

The features need not be the model's: a served or hosted model shows none, and
:mod:`guardrail.confidence.client_features` measures the question and the images on the client instead. A reference
says which kind it was fitted on (:attr:`FamiliarityReference.features`, ``"model"`` or ``"client"``), and one
reference holds one kind for all its sides: an artifact never compares the two.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import CalibrationError
from ..types import Signals
from .feature_names import FAMILIARITY, SIDES, side_feature

__all__ = ["FEATURE_KINDS", "SIDES", "FamiliarityReference", "FeatureKind", "FeatureReference"]

FloatArray = npt.NDArray[np.float64]
FeatureKind = Literal["model", "client"]
"""What a familiarity reference measures: the model's own input features (white-box, in process) or features the
client computes from the request (``confidence.client_features``: any model, served or hosted included)."""
FEATURE_KINDS: tuple[FeatureKind, ...] = get_args(FeatureKind)
_FLOOR = 1e-6
"""Variances below this fraction of the largest are raised to it (near-constant directions would divide by ~0)."""
_MIN_SCALE = 1e-12
"""The least median distance the shift is measured against (a reference of identical inputs has median 0)."""
_NO_SPREAD = 1e-10
"""Features whose total variance is below this fraction of their mean squared length do not vary."""


class FeatureReference(BaseModel):
    """Mean, principal directions and held-out distances of one side's calibration features."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]
    """``k`` orthonormal principal directions, each of the features' dimension."""
    variances: tuple[float, ...] = Field(min_length=1)
    """The variance of the calibration features along each direction (floored)."""
    residual_variance: float = Field(gt=0.0, allow_inf_nan=False)
    """The mean variance per dimension outside the k directions (floored)."""
    reference: tuple[float, ...] = Field(min_length=1)
    """Sorted distances of held-out calibration inputs: what the p-value ranks against."""

    @model_validator(mode="after")
    def _shapes(self) -> FeatureReference:
        dim = len(self.mean)
        if len(self.components) != len(self.variances) or any(len(c) != dim for c in self.components):
            raise ValueError(f"components must be {len(self.variances)} vectors of dimension {dim}")
        values = [*self.mean, *self.variances, *self.reference, *(x for c in self.components for x in c)]
        if not all(math.isfinite(x) for x in values):
            raise ValueError("a feature reference must hold finite numbers only")
        if any(v <= 0 for v in self.variances):
            raise ValueError("variances must be > 0")
        if list(self.reference) != sorted(self.reference):
            raise ValueError("reference distances must be sorted")
        return self

    @property
    def dim(self) -> int:
        """The dimension of the feature vectors."""
        return len(self.mean)

    @property
    def scale(self) -> float:
        """The median held-out distance: the unit of the shift covariate."""
        return float(np.median(self.reference))

    @classmethod
    def fit(
        cls,
        fit_features: npt.ArrayLike,
        reference_features: npt.ArrayLike,
        *,
        components: int = 32,
        max_reference: int = 2000,
        seed: int = 0,
    ) -> FeatureReference:
        """Directions from ``fit_features`` ``(n, dim)``; p-value reference from ``reference_features``.

        The two sets should be disjoint calibration inputs: distances of the inputs the directions were fitted on
        are smaller than those of fresh inputs, and would make the p-values too small. At most ``max_reference``
        reference distances are kept (a seeded sample), which bounds the artifact's size.
        """
        x = _matrix("fit_features", fit_features)
        held_out = _matrix("reference_features", reference_features)
        if x.shape[0] < 3 or held_out.shape[0] < 1:
            raise CalibrationError(
                f"a feature reference needs >= 3 fit rows and >= 1 reference row, got {x.shape[0]} and "
                f"{held_out.shape[0]}"
            )
        if held_out.shape[1] != x.shape[1]:
            raise CalibrationError(f"feature dimensions differ: {x.shape[1]} and {held_out.shape[1]}")
        mean = x.mean(axis=0)
        _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
        all_var = singular**2 / (x.shape[0] - 1)
        k = max(1, min(components, int(np.sum(all_var > 0)) or 1, x.shape[1]))
        floor = max(float(all_var.max(initial=0.0)), 1e-12) * _FLOOR
        rest = x.shape[1] - k
        residual = float(all_var[k:].sum() / rest) if rest > 0 else floor
        partial = cls(
            mean=tuple(mean.tolist()),
            components=tuple(tuple(row) for row in vt[:k].tolist()),
            variances=tuple(np.maximum(all_var[:k], floor).tolist()),
            residual_variance=max(residual, floor),
            reference=(0.0,),
        )
        distances = np.sort(partial.distance(held_out))
        if distances.size > max_reference:
            keep = np.random.default_rng(seed).choice(distances.size, size=max_reference, replace=False)
            distances = np.sort(distances[keep])
        return partial.model_copy(update={"reference": tuple(float(f"{d:.6g}") for d in distances)})

    def distance(self, features: npt.ArrayLike) -> FloatArray:
        """Distances of ``(n, dim)`` (or one ``(dim,)``) feature vectors; the same shape less the last axis."""
        x = np.asarray(features, dtype=np.float64)
        if x.shape[-1] != self.dim:
            raise CalibrationError(f"features of dimension {x.shape[-1]} against a reference of dimension {self.dim}")
        centred = x - np.asarray(self.mean)
        basis = np.asarray(self.components)
        z = centred @ basis.T
        residual = centred - z @ basis
        squared = (
            np.sum(z**2 / np.asarray(self.variances), axis=-1) + np.sum(residual**2, axis=-1) / self.residual_variance
        )
        out: FloatArray = np.sqrt(squared / self.dim)
        return out

    def p_value(self, distance: float) -> float:
        """``(1 + #{reference >= distance}) / (n + 1)``: the conformal p-value of one distance."""
        ref = np.asarray(self.reference)
        above = ref.size - int(np.searchsorted(ref, distance, side="left"))
        return (1 + above) / (ref.size + 1)

    def shift(self, distance: float) -> float:
        """``max(0, log(distance / scale))``: 0 up to the median calibration input, then growing; always finite
        (an infinite distance counts as the largest float, a NaN one as unmeasured: NaN)."""
        if math.isnan(distance):
            return math.nan
        if distance <= 0.0:
            return 0.0
        scale = max(self.scale, _MIN_SCALE)
        ratio = distance / scale
        if math.isfinite(ratio):
            return max(0.0, math.log(ratio))
        return max(0.0, math.log(min(distance, sys.float_info.max)) - math.log(scale))

    @staticmethod
    def varies(features: npt.ArrayLike) -> bool:
        """Whether ``(n, dim)`` features vary at all (identical inputs give none: nothing to scale distances by)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            return False
        spread = float(np.sum(np.var(x, axis=0)))
        size = float(np.mean(np.sum(x**2, axis=1)))
        return spread > _NO_SPREAD * max(size, np.finfo(np.float64).tiny)


class FamiliarityReference(BaseModel):
    """The calibration inputs' feature references, per side; stored in the calibration artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: FeatureKind = "model"
    """The kind of features every side was fitted on (files written before the field existed: ``"model"``)."""
    text: FeatureReference | None = None
    image: FeatureReference | None = None

    def assess(self, features: Mapping[str, Sequence[float] | None]) -> dict[str, float]:
        """Distance, shift and familiarity of each side measured in ``features`` (``{"text": [...], ...}``).

        Returns ``{side}_distance``, ``{side}_shift`` and ``{side}_familiarity`` for each side with both a vector
        and a reference, and the combined ``familiarity`` when any side was measured.
        """
        out: dict[str, float] = {}
        p_values = []
        for side in SIDES:
            reference: FeatureReference | None = getattr(self, side)
            vector = features.get(side)
            if reference is None or vector is None:
                continue
            distance = float(reference.distance(np.asarray(vector, dtype=np.float64)))
            p = reference.p_value(distance)
            out[side_feature(side, "distance")] = distance
            out[side_feature(side, "shift")] = reference.shift(distance)
            out[side_feature(side, "familiarity")] = p
            p_values.append(p)
        if p_values:
            out[FAMILIARITY] = min(1.0, len(p_values) * min(p_values))
        return out

    def apply(self, signals: Signals) -> Signals:
        """``signals`` with their input's familiarity measured from ``signals.embeddings`` (features, the
        ``familiarity`` score and its sources); unchanged when they carry no embeddings."""
        if not signals.embeddings:
            return signals
        measured = self.assess(signals.embeddings)
        familiarity = measured.get(FAMILIARITY)
        sources = dict(signals.sources)
        if familiarity is not None:
            per_side = (side_feature(side, "familiarity") for side in SIDES)
            sources["familiarity"] = tuple(name for name in per_side if name in measured)
        return signals.model_copy(
            update={"features": {**signals.features, **measured}, "familiarity": familiarity, "sources": sources}
        )

    @classmethod
    def fit(
        cls,
        fit_features: Mapping[str, npt.ArrayLike],
        reference_features: Mapping[str, npt.ArrayLike],
        *,
        features: FeatureKind = "model",
        **options: Any,
    ) -> FamiliarityReference:
        """A reference for every side present in both mappings, all of the kind ``features`` (``options`` go to
        :meth:`FeatureReference.fit`)."""
        if features not in FEATURE_KINDS:
            raise CalibrationError(f"`features` must be one of {', '.join(FEATURE_KINDS)}, got {features!r}")
        sides = {
            side: FeatureReference.fit(fit_features[side], reference_features[side], **options)
            for side in SIDES
            if side in fit_features and side in reference_features
        }
        return cls(features=features, **sides)


def _matrix(name: str, values: npt.ArrayLike) -> FloatArray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise CalibrationError(f"`{name}` must be a finite (rows, dim) array, got shape {x.shape}")
    return x
