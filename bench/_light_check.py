"""What the light install must serve, checked in whatever environment runs this script; prints one JSON object.

``python bench/_light_check.py FAKE_SERVER_PY`` (``FAKE_SERVER_PY``: ``tests/support/fake_openai_server.py``, a
small OpenAI-compatible HTTP server on 127.0.0.1 that needs only NumPy and Pillow). Before anything else it blocks
the modules the light install must never need (a ``sys.meta_path`` finder that refuses them, so that this proves
the point even in the development environment, where they are installed), then:

- imports ``guardrail`` and every module of the remote and black-box path: the remote backends, the black-box
  estimator, policies, calibration (applying an artifact), integrations, telemetry, the CLI;
- runs two guarded calls through ``OpenAICompatibleBackend`` and ``AgreementEstimator`` against the fake server:
  one where the server refuses teacher-forced scoring (visual confidence from answer agreement under perturbed
  re-queries, the hosted-API case) and one where it scores (the perturbation KL from server log-probs);
- applies the shipped reference model's calibration artifact to fixed signals;
- records every attempt to import a blocked module so far (``blocked_attempts``: none, not even an optional one);
- asks for what needs an extra (``TransformersBackend``, fitting a calibrator) and keeps the ImportError's text.

Run by ``bench/light_install.py`` (and its slow test) with a fresh environment's interpreter, and by
``tests/test_light_install.py`` with the development one. Uses nothing but the standard library and what
``pip install lvlm-guardrail`` installs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

BLOCKED = ("torch", "transformers", "safetensors", "scipy", "sklearn", "matplotlib", "easy_vqa")
"""Top-level modules the light install must never import (``local`` and ``calibrate`` extras)."""

MODULES = (
    "guardrail",
    "guardrail.backends.openai",
    "guardrail.backends.langchain",
    "guardrail.confidence.blackbox",
    "guardrail.confidence.familiarity",
    "guardrail.confidence.normalization",
    "guardrail.calibration",
    "guardrail.calibration.calibrators",
    "guardrail.calibration.decoupled",
    "guardrail.calibration.report",
    "guardrail.policy",
    "guardrail.integrations.langgraph",
    "guardrail.integrations.middleware",
    "guardrail.integrations.chat_model",
    "guardrail.integrations.escalations",
    "guardrail.telemetry",
    "guardrail.cli",
)
"""The modules of the remote and black-box path, which must import with ``BLOCKED`` refused."""


class Blocker(importlib.abc.MetaPathFinder):
    """Refuses ``BLOCKED`` modules as if they were not installed, and records every attempt."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top in BLOCKED:
            self.attempts.append(fullname)
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by bench/_light_check.py)", name=top)
        return None


def _load_fake_server(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("_light_fake_openai_server", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the fake server from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.FakeServer


def _guarded_calls(fake_server: Any) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from guardrail import Guard, Policy, Request
    from guardrail.backends.openai import OpenAICompatibleBackend
    from guardrail.confidence.blackbox import AgreementEstimator

    image = Image.fromarray(np.random.default_rng(0).integers(1, 256, size=(28, 28, 3), dtype=np.uint8))
    policy = Policy.model_validate(
        {
            "version": 1,
            "name": "light-install-check",
            "rules": [{"name": "unsure", "when": {"visual": {"below": 0.5}}, "do": "abstain"}],
            "otherwise": "accept",
            "accept_uncalibrated": True,  # no artifact for the fake server: the check is of the path, on raw scores
        }
    )
    out: dict[str, Any] = {}
    for mode in ("no_scoring", "ok"):
        with fake_server(mode) as server:
            backend = OpenAICompatibleBackend(server.base_url, "fake-vlm", timeout=10)
            try:
                guard = Guard(backend, estimator=AgreementEstimator(draws=2), policy=policy)
                result = guard.run(Request.from_question("What colour is the shape?", [image]))
            finally:
                backend.close()
            confidence = result.confidence
            out[mode] = {
                "status": result.status,
                "answer": result.answer,
                "visual": None if confidence is None else confidence.visual,
                "reasoning": None if confidence is None else confidence.reasoning,
                "visual_sources": None if confidence is None else list(confidence.sources.get("visual", ())),
                "server_requests": server.requests,
            }
    return out


def _artifact_confidence() -> dict[str, Any]:
    from guardrail import Signals, load_artifact
    from guardrail.reference import reference_model_path

    artifact = load_artifact(reference_model_path() / "guardrail_calibration.json")
    signals = Signals(visual=0.7, reasoning=0.6, holistic=0.65)
    confidence = artifact.decoupled_calibrator().calibrate(signals)
    return {"visual": confidence.visual, "reasoning": confidence.reasoning, "overall": confidence.overall}


def _hints() -> dict[str, str]:
    import guardrail
    from guardrail.calibration import PlattScaling

    hints: dict[str, str] = {}
    for name, attempt in (
        ("TransformersBackend", lambda: guardrail.TransformersBackend),
        ("fit", lambda: PlattScaling().fit([0.2, 0.8], [0, 1])),
    ):
        try:
            attempt()
        except ImportError as exc:
            hints[name] = str(exc)
        else:
            hints[name] = "no ImportError"
    return hints


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    blocker = Blocker()
    sys.meta_path.insert(0, blocker)
    fake_server = _load_fake_server(argv[0])
    start = time.perf_counter()
    import guardrail

    import_seconds = time.perf_counter() - start
    for name in MODULES:
        importlib.import_module(name)
    record: dict[str, Any] = {
        "guardrail_file": guardrail.__file__,
        "import_seconds": import_seconds,
        "guarded_calls": _guarded_calls(fake_server),
        "artifact_confidence": _artifact_confidence(),
    }
    # Before asking for what needs an extra (which tries, on purpose): anything here tried, even optionally?
    record["blocked_attempts"] = sorted(set(blocker.attempts))
    record["hints"] = _hints()
    record["blocked_loaded"] = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
