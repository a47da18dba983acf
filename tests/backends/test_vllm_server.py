"""A real vLLM server (the CPU build, in its own environment) serving the reference model folder as shipped.

What the guard needs from a served model, asserted against the in-process model (texts, token counts, statuses and
decisions exactly; log-probs, signals and confidences within ``ENGINE_OUTPUT_TOLERANCE``, 1e-4, by
``assert_same_model_output``):
- generation with per-token log-probs (the stop token vLLM returns but strips from the text is dropped; the
  in-process generation keeps its log-prob after the answer's);
- server-side teacher-forced scoring under perturbed images (vLLM's ``prompt_logprobs``), of the perturbed copies
  only: row 0 is the generation's own log-probs, of the same token ids and equal to scoring them;
- the guarded call: raw visual, reasoning and holistic signals and calibrated visual, reasoning and overall
  confidence equal to the in-process guard's with the same artifact (less familiarity, which needs the model's
  input features, so the in-process guard is measured without it here);
- 32 guarded calls at once (``asyncio.gather``), each equal to the same call made alone.

``make test-vllm`` builds the environment and runs these; see ``tests/support/vllm.py`` for the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guardrail import Guard, GuardResult, Request
from guardrail.backends.base import ENGINE_OUTPUT_TOLERANCE
from guardrail.backends.openai import OpenAICompatibleBackend
from guardrail.backends.transformers import TransformersBackend
from guardrail.calibration.artifact import CalibrationArtifact, fingerprint_model, load_artifact
from guardrail.confidence.perturb import perturb_image
from guardrail.data.corruptions import corrupt
from guardrail.data.easyvqa import load_easyvqa
from guardrail.policy.loader import load_policy
from guardrail.pretrained import ARTIFACT_FILENAME, resolve_certified
from guardrail.reference import reference_model_path
from tests.support.model_outputs import assert_same_model_output
from tests.support.vllm import VllmServer, in_process_estimator, served, served_estimator

pytestmark = pytest.mark.vllm
PATCH = 8  # the reference model's vision patch, on 64 x 64 images sent as they are


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    with served(reference_model_path(), tmp_path_factory.mktemp("vllm")) as running:
        print(f"vLLM up in {running.startup_seconds:.0f} s, {running.rss_bytes() / 2**30:.2f} GiB resident")
        yield running


@pytest.fixture(scope="module")
def artifact() -> CalibrationArtifact:
    path = reference_model_path() / ARTIFACT_FILENAME
    return load_artifact(path, expected_model_fingerprint=fingerprint_model(reference_model_path()))


@pytest.fixture(scope="module")
def local() -> TransformersBackend:
    return TransformersBackend.from_pretrained(reference_model_path(), device="cpu", max_new_tokens=64)


@pytest.fixture
def remote(server: VllmServer) -> Iterator[OpenAICompatibleBackend]:
    # one image per prompt, as the model folder's config.json declares for the in-process backend
    backend = OpenAICompatibleBackend(server.base_url, server.model, timeout=120, max_tokens=64, max_images=1)
    yield backend
    backend.close()


def questions(n: int) -> list[Request]:
    """Test questions, every other image corrupted so that confidences spread out."""
    examples = load_easyvqa("test")[:n]
    kinds = ("blur", "occlusion", "gaussian_noise", "low_contrast")
    return [
        Request.from_question(e.question, [corrupt(e.image(), kinds[i // 2 % 4], 3, seed=i) if i % 2 else e.image()])
        for i, e in enumerate(examples)
    ]


def guards(artifact: CalibrationArtifact, remote: Any, local: TransformersBackend) -> tuple[Guard, Guard]:
    policy = resolve_certified(load_policy("default"), artifact)
    calibrator = artifact.decoupled_calibrator()
    served_guard = Guard(
        remote, estimator=served_estimator(artifact, patch_size=PATCH), calibrator=calibrator, policy=policy
    )
    local_guard = Guard(local, estimator=in_process_estimator(artifact), calibrator=calibrator, policy=policy)
    return served_guard, local_guard


def measured(result: GuardResult) -> dict[str, object]:
    """What a served and an in-process guard must agree on: each attempt's answer text, raw visual, reasoning and
    holistic signals and calibrated visual, reasoning and overall confidence (every one measured), the decisions
    and the status."""
    attempts = []
    for attempt in result.attempts:
        assert attempt.generation is not None
        signals, confidence = attempt.signals, attempt.confidence
        assert signals is not None
        assert confidence is not None
        raw = {name: getattr(signals, name) for name in ("visual", "reasoning", "holistic")}
        calibrated = {name: getattr(confidence, name) for name in ("visual", "reasoning", "overall")}
        assert None not in raw.values(), (raw, signals.problems)
        assert None not in calibrated.values(), calibrated
        attempts.append({"text": attempt.generation.text, "signals": raw, "confidence": calibrated})
    return {"attempts": attempts, "rules": [d.rule for d in result.decisions], "status": result.status}


def assert_same(served: GuardResult, local: GuardResult) -> None:
    assert served.error is None, served.error
    assert_same_model_output(measured(served), measured(local), tolerance=ENGINE_OUTPUT_TOLERANCE, name="served")


def test_vllm_serves_the_shipped_folder_unmodified(server: VllmServer, artifact: CalibrationArtifact) -> None:
    args = server.process.args
    assert isinstance(args, list)
    assert Path(args[args.index("--model") + 1]) == reference_model_path()
    # the folder vLLM loaded is the one the artifact is bound to, byte for byte
    assert artifact.model_fingerprint == fingerprint_model(reference_model_path())
    assert "Loading weights took" in server.log.read_text(errors="replace")


def test_generation_with_logprobs_equals_in_process(
    remote: OpenAICompatibleBackend, local: TransformersBackend
) -> None:
    eos = local.processor.tokenizer.eos_token_id
    for request in questions(4):
        served, here = remote.generate(request), local.generate(request)
        assert served.text == here.text
        assert "".join(served.tokens) == served.text  # vLLM's trailing </s> record dropped
        assert served.finish_reason == here.finish_reason == "stop"
        # in process the stop token's log-prob is kept after the answer's; it is part of no span
        assert here.token_ids[-1] == eos
        assert_same_model_output(
            served.token_logprobs, here.token_logprobs[:-1], tolerance=ENGINE_OUTPUT_TOLERANCE, name="log-probs"
        )


def test_scoring_under_perturbed_images_equals_in_process(
    remote: OpenAICompatibleBackend, local: TransformersBackend
) -> None:
    for request in questions(3):
        generation = local.generate(request)
        (image,) = local.images(request)
        variants = [
            [perturb_image(image, "blackout", patch_size=PATCH, seed=1, probability=1.0)],
            [perturb_image(image, "blackout", patch_size=PATCH, seed=2, probability=0.5)],
            [perturb_image(image, "grey", patch_size=PATCH)],
        ]
        served = remote.score_text(request, generation.text, variants)
        *answer, stop = generation.token_ids  # the text is scored; the stop token after it is not part of it
        assert stop == local.processor.tokenizer.eos_token_id
        here = local.score(request, answer, variants)
        assert "".join(served.tokens) == generation.text
        assert len(served.token_logprobs) == 1 + len(variants)
        assert_same_model_output(
            [list(row) for row in served.token_logprobs],
            here.token_logprobs.tolist(),
            tolerance=ENGINE_OUTPUT_TOLERANCE,
            name="scored rows",
        )


def test_only_the_perturbed_copies_are_scored(
    server: VllmServer, remote: OpenAICompatibleBackend, local: TransformersBackend
) -> None:
    """Row 0 is the served generation's own log-probs: the same tokens the server scores the variants on (the ids
    the model generated) and the same numbers as scoring them, so one request per variant is all it takes."""
    eos = local.processor.tokenizer.eos_token_id
    for request in questions(3):
        generation = remote.generate(request)
        (image,) = local.images(request)
        variants = [
            [perturb_image(image, "blackout", patch_size=PATCH, seed=1, probability=1.0)],
            [perturb_image(image, "grey", patch_size=PATCH)],
        ]
        before = server.requests_finished()
        kept = remote.score_generation(request, generation, generation.text, variants)
        assert server.requests_finished() - before == len(variants)
        scored = remote.score_text(request, generation.text, variants)
        assert kept.tokens == scored.tokens == generation.tokens
        assert kept.token_logprobs[0] == generation.token_logprobs
        assert_same_model_output(
            [list(row) for row in kept.token_logprobs],
            [list(row) for row in scored.token_logprobs],
            tolerance=ENGINE_OUTPUT_TOLERANCE,
            name="rows",
        )
        # the scored tokens are the ids the model generated (in process: the same answer, its stop token after it)
        (body,) = remote._score_bodies(request, generation.text, [])
        entries = remote._client.chat.completions.create(**body).model_extra["prompt_logprobs"]
        ids = [int(next(iter(entry))) for entry in entries[-len(generation.tokens) :]]
        assert [*ids, eos] == list(local.generate(request).token_ids)


def test_guarded_call_equals_in_process(
    remote: OpenAICompatibleBackend, local: TransformersBackend, artifact: CalibrationArtifact
) -> None:
    served_guard, local_guard = guards(artifact, remote, local)
    results = [(served_guard.run(r), local_guard.run(r)) for r in questions(8)]
    for far, here in results:
        assert_same(far, here)
        signals = far.attempts[0].signals
        assert signals is not None
        assert "vision_kl" in signals.features  # the visual score is the server-side KL probe
        assert not signals.problems
    assert len({round(s.confidence.visual or 0, 3) for s, _ in results if s.confidence}) > 2  # spread out


def test_32_guarded_calls_at_once(
    remote: OpenAICompatibleBackend, local: TransformersBackend, artifact: CalibrationArtifact
) -> None:
    served_guard, _ = guards(artifact, remote, local)
    requests = questions(32)

    async def all_at_once() -> list[GuardResult]:
        return list(await asyncio.gather(*(served_guard.arun(r) for r in requests)))

    together = asyncio.run(all_at_once())
    alone = [served_guard.run(r) for r in requests]
    for at_once in together:
        assert at_once.error is None, at_once.error
        assert at_once.confidence is not None
    # the server batches concurrent requests as it sees fit: its floats are compared as another engine's
    assert_same_model_output(
        [(r.status, r.answer, r.confidence) for r in together],
        [(r.status, r.answer, r.confidence) for r in alone],
        tolerance=ENGINE_OUTPUT_TOLERANCE,
        name="at once",
    )
