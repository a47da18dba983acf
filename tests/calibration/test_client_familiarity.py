"""Calibration fits the familiarity reference on client features where the rows carry no model features (a served
or hosted model), stores which kind it is in the artifact, and the black-box estimator then reports familiarity.

The rows' requests are real easy-VQA questions and images (client features are computed from them); their scores
are synthetic, since what is tested is where the reference comes from and where it goes, not a model's quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from guardrail import Generation, Request
from guardrail.calibration.artifact import CalibrationArtifact, fingerprint_model, load_artifact, save_artifact
from guardrail.calibration.collect import ScoredItem
from guardrail.calibration.pipeline import apply_artifact, calibrate_rows, familiarity_kind
from guardrail.confidence.blackbox import AgreementEstimator
from guardrail.confidence.client_features import TEXT_DIM, request_features
from guardrail.data.labelled import LabelledItem, easyvqa_items
from guardrail.data.reworded import reworded_items
from guardrail.integrations._chat_guard import blackbox_estimator
from guardrail.pretrained import ARTIFACT_FILENAME
from guardrail.reference import reference_model_path
from guardrail.types import Signals

ROWS = 120


def scored(item: LabelledItem, i: int, *, embeddings: bool) -> ScoredItem:
    rng = np.random.default_rng(i)
    visual, reasoning = float(rng.uniform(0.2, 0.9)), float(rng.uniform(0.2, 0.9))
    signals = Signals(
        visual=visual,
        reasoning=reasoning,
        holistic=visual * reasoning,
        features={"visual_score": float(rng.normal())},
        embeddings={"text": tuple(rng.normal(size=6).tolist()), "image": tuple(rng.normal(size=6).tolist())}
        if embeddings
        else {},
    )
    answer, perception = i % 3 != 0 and i % 4 != 0, i % 4 != 0
    return ScoredItem(item, Generation(text="x"), signals, "a", "x", answer, perception, None, 0.0, 0.0)


@pytest.fixture(scope="module")
def items() -> list[LabelledItem]:
    return easyvqa_items("calibration", limit=ROWS, seed=0)


def fit(rows: list[ScoredItem], **options: object) -> CalibrationArtifact:
    return calibrate_rows(
        rows,
        model_fingerprint="sha256:m",
        data_fingerprint="sha256:d",
        part_calibrator="platt",
        **options,  # type: ignore[arg-type]
    )


def test_rows_without_model_features_get_a_client_feature_reference(items: list[LabelledItem]) -> None:
    rows = [scored(item, i, embeddings=False) for i, item in enumerate(items)]
    assert familiarity_kind(rows) == "client"
    artifact = fit(rows)
    assert artifact.familiarity is not None
    assert artifact.familiarity_features == "client"
    assert artifact.familiarity.text is not None
    assert artifact.familiarity.text.dim == TEXT_DIM
    assert artifact.familiarity.image is not None
    measured = apply_artifact(rows, artifact)
    assert all(r.signals is not None and r.signals.familiarity is not None for r in measured)


def test_rows_with_model_features_keep_them_unless_client_features_are_asked_for(items: list[LabelledItem]) -> None:
    rows = [scored(item, i, embeddings=True) for i, item in enumerate(items)]
    assert fit(rows).familiarity_features == "model"
    client = fit(rows, familiarity_features="client")
    assert client.familiarity_features == "client"
    assert client.familiarity is not None
    assert client.familiarity.text is not None
    assert client.familiarity.text.dim == TEXT_DIM  # from the requests, not the rows' 6-number model features
    assert fit(rows, shift=False).familiarity_features is None


def test_the_kind_survives_save_and_load_and_older_files_read_as_model_features(
    items: list[LabelledItem], tmp_path: Path
) -> None:
    artifact = fit([scored(item, i, embeddings=False) for i, item in enumerate(items)])
    loaded = load_artifact(save_artifact(artifact, tmp_path / "client.json"))
    assert loaded.familiarity_features == "client"
    assert loaded.familiarity == artifact.familiarity
    shipped = load_artifact(
        reference_model_path() / ARTIFACT_FILENAME, expected_model_fingerprint=fingerprint_model(reference_model_path())
    )  # written before the field existed
    assert shipped.familiarity_features == "model"


@pytest.fixture(scope="module")
def client_artifact(items: list[LabelledItem]) -> CalibrationArtifact:
    return fit([scored(item, i, embeddings=False) for i, item in enumerate(items)])


class BlackBox:
    """A model behind an API, in one piece: a fixed structured answer, no log-probs, no scoring."""

    name = "black-box"

    def generate(self, request: Request, options: object = None) -> Generation:
        text = (
            "<think><vision>a red circle</vision><reasoning>so red</reasoning></think> \\boxed{red} "
            "<confidence><vision_confidence>8</vision_confidence><reasoning_confidence>6</reasoning_confidence>"
            "</confidence>"
        )
        return Generation(text=text, answer="red", model=self.name)


def test_the_black_box_estimator_reports_familiarity_with_a_client_feature_artifact(
    client_artifact: CalibrationArtifact,
) -> None:
    estimator = blackbox_estimator(client_artifact)
    assert estimator.familiarity == client_artifact.familiarity
    backend = BlackBox()
    usual = easyvqa_items("test", limit=1, seed=1)[0].request
    reworded = reworded_items("test", group="evaluation", limit=1, seed=0)[0].request
    for request in (usual, reworded):
        signals = estimator.estimate(backend, request, backend.generate(request))
        assert signals.familiarity is not None
        assert signals.sources["familiarity"] == ("text_familiarity", "image_familiarity")
        assert {"text_shift", "image_shift"} <= set(signals.features)
    first = estimator.estimate(backend, reworded, backend.generate(reworded))
    again = estimator.estimate(backend, reworded, backend.generate(reworded))
    assert first.familiarity == again.familiarity  # from the request alone
    assert first.features["text_shift"] > 0.0
    confidence = client_artifact.decoupled_calibrator().calibrate(first)
    assert confidence.familiarity == first.familiarity


def test_a_model_feature_reference_is_refused_by_the_black_box_estimator_and_left_out_by_the_chat_guard(
    items: list[LabelledItem],
) -> None:
    model = fit([scored(item, i, embeddings=True) for i, item in enumerate(items)])
    with pytest.raises(ValueError, match="`familiarity` must be a reference of client features"):
        AgreementEstimator(familiarity=model.familiarity)
    assert blackbox_estimator(model).familiarity is None


def test_the_white_box_estimator_measures_client_features_when_the_artifact_says_so(
    client_artifact: CalibrationArtifact,
) -> None:
    from guardrail.backends.transformers import TransformersBackend
    from guardrail.pretrained import estimator_for

    backend = TransformersBackend.from_pretrained(reference_model_path(), device="cpu", max_new_tokens=64)
    request = reworded_items("test", group="evaluation", limit=1, seed=0)[0].request
    signals = estimator_for(client_artifact).estimate(backend, request, backend.generate(request))
    assert client_artifact.familiarity is not None
    expected = client_artifact.familiarity.assess(request_features(request))
    assert signals.familiarity == pytest.approx(expected["familiarity"], abs=1e-12)
    assert signals.features["text_distance"] == pytest.approx(expected["text_distance"], rel=1e-12)
