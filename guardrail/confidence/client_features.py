"""Familiarity features measured on the client, from what it sends: no model, no GPU, no download.

A served or hosted model keeps its internals to itself, so the model's own input features (what
:mod:`guardrail.confidence.familiarity` measures by default) are out of reach there. What the client always has is
the request: the question text and the images. This module turns them into fixed-length vectors that the same
:class:`~guardrail.confidence.familiarity.FeatureReference` machinery (Mahalanobis distance in the calibration
inputs' principal directions, conformal p-value, shift covariate) compares with the calibration inputs':

- the **question** (:func:`text_features`, :data:`TEXT_DIM` numbers): signed feature hashing of its character
  3- and 4-grams (case kept) and of its lowercase word unigrams and bigrams, each block sublinearly counted and
  scaled to unit length, plus a few shape statistics (length, words, shares of capitals, digits, punctuation and
  non-ASCII characters). A question worded unlike every calibration question brings n-grams the calibration
  questions never had, hence energy outside their principal directions: a large distance. Hashing uses blake2b,
  so a vector is the same in every process, on every machine, with nothing to download or fit.
- the **images** (:func:`image_features`, :data:`IMAGE_DIM` numbers, mean-pooled over the request's images):
  colour histograms, brightness and saturation statistics, the share of clipped pixels, grey-level entropy,
  gradient strength and orientation histogram, sharpness (variance of the Laplacian), a noise estimate (median
  absolute Laplacian), and JPEG blockiness, measured at a working resolution of at most :data:`WORK_SIDE` pixels
  a side. They describe how an image was taken and damaged (blurred, noisy, dark, compressed, overexposed), not
  what it shows.

Because the features come from the request alone, the familiarity a guard reports through a server equals the
one it reports in process for the same request: the server never enters into it. The reference records which
kind of features it was fitted on (``FamiliarityReference.features``: ``"model"`` or ``"client"``), and
:func:`measure_familiarity` measures an input with the kind its reference asks for, so an artifact never compares
one kind with the other. (The two kinds also differ in dimension, so a mix-up elsewhere fails loudly.)

Plain numpy and PIL.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..errors import ImageError
from ..types import Request, Signals
from .familiarity import FamiliarityReference

__all__ = [
    "IMAGE_DIM",
    "TEXT_DIM",
    "WORK_SIDE",
    "image_features",
    "measure_familiarity",
    "request_features",
    "text_features",
]

FloatArray = npt.NDArray[np.float64]

_CHAR_DIM = 192
_WORD_DIM = 96
_CHAR_NGRAMS = (3, 4)
_TEXT_STATS = 8
TEXT_DIM = _CHAR_DIM + _WORD_DIM + _TEXT_STATS
"""Length of a question's client feature vector."""

WORK_SIDE = 256
"""Images whose longer side exceeds this many pixels are measured on a box-filtered copy of at most this size."""
_COLOUR_BINS = 8
_ORIENTATION_BINS = 8
_ENTROPY_BINS = 32
_IMAGE_STATS = 15
IMAGE_DIM = 3 * _COLOUR_BINS + _ORIENTATION_BINS + _IMAGE_STATS
"""Length of an image's client feature vector."""

_WORDS = re.compile(r"\w+|[^\w\s]")
_SPACES = re.compile(r"\s+")
_EPS = 1e-6
_STEP = 0.01
"""Added to mean grey steps (about 2.5 levels of 255) so that the blockiness of a flat image is ~0, not noise."""


# -- the question ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def _slot(token: str, dim: int, salt: bytes) -> tuple[int, float]:
    """The bucket and sign of ``token`` in a hashed block of ``dim`` (blake2b: the same in every process)."""
    digest = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8, person=salt).digest(), "little")
    return digest % dim, 1.0 if (digest >> 40) & 1 else -1.0


def _hashed(tokens: Iterable[str], dim: int, salt: bytes) -> FloatArray:
    """Signed hashed counts of ``tokens``, counted sublinearly (1 + log tf) and scaled to unit length."""
    out = np.zeros(dim, dtype=np.float64)
    for token, count in Counter(tokens).items():
        bucket, sign = _slot(token, dim, salt)
        out[bucket] += sign * (1.0 + math.log(count))
    norm = float(np.linalg.norm(out))
    return out / norm if norm > 0 else out


def text_features(question: str) -> FloatArray:
    """``(TEXT_DIM,)`` client features of a question (see the module docstring); whitespace runs count as one
    space, and an empty question is a vector of zeros but for its length statistics."""
    if not isinstance(question, str):
        raise TypeError(f"`question` must be a str, got {type(question).__name__}")
    text = _SPACES.sub(" ", question).strip()
    padded = f" {text} "
    chars = [padded[i : i + n] for n in _CHAR_NGRAMS for i in range(len(padded) - n + 1)]
    words = [w.lower() for w in _WORDS.findall(text)]
    bigrams = [f"{a} {b}" for a, b in itertools.pairwise(words)]
    letters = sum(c.isalpha() for c in text)
    size = max(len(text), 1)
    stats = np.array(
        [
            math.log1p(len(text)) / 4.0,
            math.log1p(len(words)) / 3.0,
            sum(c.isupper() for c in text) / max(letters, 1),
            sum(c.isdigit() for c in text) / size,
            sum(not c.isalnum() and not c.isspace() for c in text) / size,
            sum(not c.isascii() for c in text) / size,
            text.count(" ") / size,
            float(np.mean([len(w) for w in words])) / 10.0 if words else 0.0,
        ]
    )
    return np.concatenate(
        [_hashed(chars, _CHAR_DIM, b"guardrail-char"), _hashed([*words, *bigrams], _WORD_DIM, b"guardrail-word"), stats]
    )


# -- the images -----------------------------------------------------------------------------------------------


def _working(image: Image.Image) -> FloatArray:
    """``(h, w, 3)`` RGB values in [0, 1], box-filtered down to at most ``WORK_SIDE`` a side."""
    rgb = image.convert("RGB")
    if max(rgb.size) > WORK_SIDE:
        scale = WORK_SIDE / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.float64) / 255.0


def _blockiness(grey: FloatArray) -> float:
    """log of the mean step across 8-pixel block borders over the mean step elsewhere (JPEG's 8 x 8 grid)."""
    ratios = []
    for steps in (np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0)).T):
        if steps.shape[1] < 16:
            continue
        border = (np.arange(steps.shape[1]) % 8) == 7
        ratios.append(math.log((steps[:, border].mean() + _STEP) / (steps[:, ~border].mean() + _STEP)))
    return float(np.mean(ratios)) if ratios else 0.0


def _one_image(image: Image.Image) -> FloatArray:
    rgb = _working(image)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    colour = [np.sqrt(np.histogram(rgb[..., c], bins=_COLOUR_BINS, range=(0.0, 1.0))[0] / grey.size) for c in range(3)]
    top, bottom = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = (top - bottom) / np.maximum(top, _EPS)
    gx = np.diff(grey, axis=1)[:-1, :] if grey.shape[0] > 1 and grey.shape[1] > 1 else np.zeros((1, 1))
    gy = np.diff(grey, axis=0)[:, :-1] if grey.shape[0] > 1 and grey.shape[1] > 1 else np.zeros((1, 1))
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # orientation, sign-free
    orientation = np.histogram(angle, bins=_ORIENTATION_BINS, range=(0.0, np.pi), weights=magnitude)[0]
    orientation = orientation / max(float(orientation.sum()), _EPS)
    if grey.shape[0] > 2 and grey.shape[1] > 2:
        laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
    else:
        laplacian = np.zeros((1, 1))
    levels = np.histogram(grey, bins=_ENTROPY_BINS, range=(0.0, 1.0))[0] / grey.size
    entropy = -float(np.sum(levels[levels > 0] * np.log(levels[levels > 0]))) / math.log(_ENTROPY_BINS)
    p5, p50, p95 = np.percentile(grey, (5, 50, 95))
    stats = np.array(
        [
            grey.mean(),
            grey.std(),
            p5,
            p50,
            p95,
            float(np.mean(grey < 0.02)),
            float(np.mean(grey > 0.98)),
            saturation.mean(),
            saturation.std(),
            entropy,
            math.log(float(magnitude.mean()) + 1e-4) / 5.0,
            float(np.mean(magnitude > 0.1)),
            math.log(float(laplacian.var()) + 1e-6) / 5.0,
            math.log(float(np.median(np.abs(laplacian))) + 1e-4) / 5.0,
            _blockiness(grey),
        ]
    )
    return np.concatenate([*colour, orientation, stats])


def image_features(images: Sequence[Image.Image]) -> FloatArray | None:
    """``(IMAGE_DIM,)`` client features of ``images``, mean-pooled over them (``None`` without images)."""
    if not images:
        return None
    out: FloatArray = np.mean([_one_image(im) for im in images], axis=0)
    return out


# -- a request ------------------------------------------------------------------------------------------------


def request_features(request: Request, images: Sequence[Image.Image] | None = None) -> dict[str, tuple[float, ...]]:
    """``{"text": ..., "image": ...}``: the client features of ``request``'s question and images (``images``: the
    request's images already decoded, else they are decoded here; an image that cannot be decoded is an
    :class:`~guardrail.ImageError`). A side without content (no question text, no image) is left out."""
    out: dict[str, tuple[float, ...]] = {}
    if request.question.strip():
        out["text"] = tuple(text_features(request.question).tolist())
    if images is None:
        from ..images import decode_image

        images = [decode_image(block, name=f"image {i}") for i, block in enumerate(request.images)]
    pooled = image_features(images)
    if pooled is not None:
        out["image"] = tuple(pooled.tolist())
    return out


def measure_familiarity(
    reference: FamiliarityReference,
    signals: Signals,
    request: Request,
    images: Sequence[Image.Image] | None = None,
) -> Signals:
    """``signals`` with their input's familiarity measured against ``reference`` with the features it was fitted
    on: the model's (``signals.embeddings``) or the client's (computed here from ``request``; they replace
    ``signals.embeddings``, so that what was measured is what the signals carry). Images that cannot be decoded
    leave the image side unmeasured, with the reason among ``signals.problems``."""
    if reference.features == "model":
        return reference.apply(signals)
    try:
        client: Mapping[str, tuple[float, ...]] = request_features(request, images)
    except ImageError as exc:
        client = {"text": tuple(text_features(request.question).tolist())} if request.question.strip() else {}
        signals = signals.model_copy(
            update={"problems": (*signals.problems, f"images unreadable ({exc}): image familiarity not measured")}
        )
    return reference.apply(signals.model_copy(update={"embeddings": dict(client)}))
