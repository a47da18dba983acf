"""The stability probe: does the answer survive changes to the image that must not change it?

The visual probe (``probe.py``) measures how much an answer *relies* on the image and how *certain* its perceived
tokens are. A model that misreads a tinted or rotated shape relies on the image and is certain, so neither sees
that the percept is *fragile*. This module draws K views of each image that keep what it shows (a small colour
jitter, a small rotation or shift, a crop that keeps the object, a little noise: test-time augmentation, as in
VL-Uncertainty and VAUQ), has the backend re-score the answer teacher-forced under them in the **same** padded pass
as the probe's perturbed copy (no generation), and turns the fall of the answer's and the percept's log-probs into
features:

- ``stability_vision_drop`` / ``stability_answer_drop``: the mean over views of the span's mean positive fall
  ``max(0, log p_t - log q_t)`` (nats per token), on the ``<vision>`` tokens and on the answer tokens;
- ``stability_vision_worst`` / ``stability_answer_worst``: the same for the view that hurt most;
- ``stability_drop``: the percept's fall (``stability_vision_drop``), the one number the visual statistic weighs
  (``VisualNormalization.stability_weight``) and the calibrator may discount by. The percept, not the answer:
  teacher-forced after the perceived tokens, the answer tokens hardly move under any view (on the reference model's
  calibration rows their fall ranks perception errors at AUROC 0.47-0.55, the percept's at 0.71-0.83);
- ``stability``: ``exp(-stability_drop)``, the geometric-mean share of the percept's token probability that
  survives the views (1 = every view leaves it as sure as the original), which policies can test.

Views act on the image at the model's input resolution (the backend's ``model_images``), are deterministic for a
seed and keep the image's size and mode, so they tokenise like the original. Nothing here needs torch: the views
need Pillow and NumPy, and the falls are measured against the array API like ``signals.py`` (torch tensors in
process, float64 NumPy arrays in the black-box estimator of the light install).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from array_api_compat import array_namespace
from PIL import Image, ImageEnhance

from . import signals as sig
from .feature_names import STABILITY, STABILITY_DROP
from .settings import STABILITY_FAMILIES, StabilityFamily, StabilitySetting

__all__ = [
    "STABILITY_FAMILIES",
    "StabilityFamily",
    "StabilitySetting",
    "stability_features",
    "stability_view",
    "stability_views",
    "view_falls",
]

# Strengths: small enough that the scene is unchanged to a person, large enough to move a fragile percept.
_MAX_ROTATION = 8.0  # degrees
_MAX_SHIFT = 0.05  # of the side
_SCALE = (0.9, 1.1)
_BRIGHTNESS = (0.8, 1.2)
_CONTRAST = (0.75, 1.25)
_SATURATION = (0.75, 1.25)
_MAX_HUE = 0.02  # of the colour wheel
_NOISE_STD = 10.0  # on the 0..255 scale


def _background(image: Image.Image) -> tuple[int, ...]:
    corner = image.getpixel((0, 0))
    return tuple(corner) if isinstance(corner, tuple) else (int(corner or 0),) * 3


def _geometric(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    scale = rng.uniform(*_SCALE)
    dx, dy = rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, size=2) * np.array([width, height])
    # Output (x, y) reads input at the inverse of: scale and rotate about the centre, then shift.
    cos, sin = math.cos(math.radians(angle)) / scale, math.sin(math.radians(angle)) / scale
    cx, cy = width / 2.0, height / 2.0
    a, b, d, e = cos, sin, -sin, cos
    c = cx - a * (cx + dx) - b * (cy + dy)
    f = cy - d * (cx + dx) - e * (cy + dy)
    return image.transform(
        image.size,
        Image.Transform.AFFINE,
        (a, b, c, d, e, f),
        resample=Image.Resampling.BILINEAR,
        fillcolor=_background(image),
    )


def _photometric(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = ImageEnhance.Brightness(image).enhance(rng.uniform(*_BRIGHTNESS))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(*_CONTRAST))
    out = ImageEnhance.Color(out).enhance(rng.uniform(*_SATURATION))
    hsv = np.asarray(out.convert("HSV"), dtype=np.float32)
    hue = (hsv[..., 0] + rng.uniform(-_MAX_HUE, _MAX_HUE) * 256.0) % 256.0
    data = np.ascontiguousarray(np.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1).astype(np.uint8))
    return Image.frombytes("HSV", out.size, data.tobytes()).convert("RGB")


def _noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, _NOISE_STD, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


_KINDS = {"photometric": _photometric, "geometric": _geometric, "noise": _noise}


def stability_view(image: Image.Image, family: StabilityFamily, index: int, seed: int = 0) -> Image.Image:
    """View ``index`` of ``family`` of ``image`` (RGB, same size); deterministic for ``(seed, index)``.

    ``mixed`` takes the photometric, geometric and noise kinds in turn: its view ``3j + i`` is view ``j`` of kind
    ``i`` (0 photometric, 1 geometric, 2 noise), the very same image.
    """
    if family not in STABILITY_FAMILIES:
        raise ValueError(f"`family` must be one of {', '.join(STABILITY_FAMILIES)}, got {family!r}")
    if index < 0:
        raise ValueError(f"`index` must be >= 0, got {index}")
    kinds = tuple(_KINDS)
    kind, draw = (kinds[index % 3], index // 3) if family == "mixed" else (family, index)
    # Seeded by (seed, draw, kind): mixed view 3j + i is view j of kind i, so the families' views compose.
    rng = np.random.default_rng([seed, draw, kinds.index(kind)])
    return _KINDS[kind](image.convert("RGB"), rng)


def stability_views(images: Sequence[Image.Image], setting: StabilitySetting) -> list[list[Image.Image]]:
    """``setting.count`` views of the images, each view a list with one changed copy per image."""
    return [
        [stability_view(im, setting.family, k, setting.seed + i) for i, im in enumerate(images)]
        for k in range(setting.count)
    ]


def view_falls(logp: sig.ArrayT, logq: sig.ArrayT, mask: sig.ArrayT) -> sig.ArrayT:
    """Per view, the mean over ``mask``'s tokens of ``max(0, log p - log q)`` (clamped at 20 nats), from ``logp``
    ``(tokens,)`` and ``logq`` ``(views, tokens)``: ``(views,)``, NaN where ``mask`` selects nothing."""
    xp = array_namespace(logp, logq)
    fall: sig.ArrayT = xp.clip(logp - logq, 0.0, sig.LOG_RATIO_CLAMP)
    return sig.masked_mean(fall, mask)


def stability_features(logp: sig.ArrayT, logq: sig.ArrayT, vision: sig.ArrayT, answer: sig.ArrayT) -> dict[str, float]:
    """The stability features (module docstring) from ``logp`` ``(tokens,)`` under the original images and
    ``logq`` ``(views, tokens)`` under the views; a span without tokens gives none of its features."""
    out: dict[str, float] = {"stability_views": float(logq.shape[0])}
    for name, mask in (("vision", vision), ("answer", answer)):
        xp = array_namespace(logp, logq, mask)
        if not bool(xp.any(mask)) or logq.shape[0] == 0:
            continue
        per_view = view_falls(logp, logq, mask)
        out[f"stability_{name}_drop"] = float(xp.mean(per_view))
        out[f"stability_{name}_worst"] = float(xp.max(per_view))
    if "stability_vision_drop" in out:
        out[STABILITY_DROP] = out["stability_vision_drop"]
        out[STABILITY] = math.exp(-out[STABILITY_DROP])
    return out
