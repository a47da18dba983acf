"""Your own view providers for ``fetch_more_views``: a camera that recaptures the scene, and a LangChain tool.

When the guard doubts what the model *saw* (low visual confidence), the policy asks a view provider for more
images of the scene and calls the model again with them. Besides the built-in ``zoom`` crops, any source of
images can be one:

- ``RecaptureProvider(camera.capture)``: a callable returning a fresh image of the same scene (here a simulated
  camera whose every frame has new sensor noise);
- ``as_view_provider(tool)``: a LangChain tool returning image content blocks (here a renderer of a close-up).

The camera here is a poor one (strong sensor noise), so the reference model doubts what it saw in the first
capture (visual confidence about 0.48, below the policy's 0.6): the policy asks the camera for another capture,
and if that one is no clearer, the close-up tool for a view without noise, which it is then sure of. A provider
that fails or returns nothing ends in the policy's ``on_error``, never in an unchecked answer.

Run:  python examples/custom_view_provider.py [--model DIR]
"""

from __future__ import annotations

import argparse
import base64
import io
from typing import Any

import numpy as np
from langchain_core.tools import tool
from PIL import Image, ImageDraw

from guardrail import Guard, Request, load_guard
from guardrail.integrations import RecaptureProvider, as_view_provider

POLICY = """\
version: 1
name: look-again
budget: {max_attempts: 3, max_seconds: null}
rules:
  - name: doubt-what-it-saw
    when: {visual: {below: 0.6}, attempt: {below: 1}}
    do: fetch_more_views
    with: {views: 2, provider: camera}
  - name: still-doubtful
    when: {visual: {below: 0.6}}
    do: fetch_more_views
    with: {views: 1, provider: closeup}
otherwise: accept
on_exhausted: abstain
on_error: abstain
"""


class Camera:
    """A simulated camera over one scene: every capture is the scene plus fresh sensor noise."""

    def __init__(self, colour: str = "yellow", noise: float = 160.0, seed: int = 0) -> None:
        self.scene = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(self.scene).polygon([(32, 10), (54, 52), (10, 52)], fill=colour)
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.captures = 0
        self.closeups = 0

    def capture(self) -> Image.Image:
        self.captures += 1
        pixels = np.asarray(self.scene, dtype=np.float32)
        noisy = pixels + self.rng.normal(0.0, self.noise, pixels.shape)
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def build_guard(camera: Camera, model_dir: str | None = None) -> Guard:
    """The one place this example chooses its model: the embedded reference model unless told otherwise."""

    @tool(response_format="content")
    def closeup() -> list[dict[str, Any]]:
        """A close-up of the middle of the scene, without noise."""
        camera.closeups += 1
        crop = camera.scene.crop((8, 8, 56, 56)).resize((64, 64))
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG")
        return [{"type": "image", "base64": base64.b64encode(buffer.getvalue()).decode(), "mime_type": "image/png"}]

    # load_guard: the model folder ($GUARDRAIL_MODEL, else the embedded reference model) with its calibration.
    return load_guard(
        model_dir,
        policy=POLICY,
        view_providers={
            "camera": RecaptureProvider(camera.capture, name="camera"),
            "closeup": as_view_provider(closeup),
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a transformers vision-language model folder (default: reference model)")
    args = parser.parse_args(argv)
    camera = Camera()
    guard = build_guard(camera, args.model)
    result = guard.run(Request.from_question("What color is the shape?", [camera.capture()]))
    for attempt in result.attempts:
        images = 1 if attempt.request is None else len(attempt.request.images)
        conf = attempt.confidence
        visual = "unknown" if conf is None or conf.visual is None else f"{conf.visual:.2f}"
        decision = attempt.decision
        provider = f" from {decision.params['provider']}" if "provider" in decision.params else ""
        action = f"{decision.action.value}{provider}"
        print(f"attempt {attempt.index}: {images} image(s), visual confidence {visual} -> {action}")
    print(f"status: {result.status}; answer: {result.answer!r}")
    print(f"camera captures: {camera.captures}; close-ups: {camera.closeups}")
    if result.error is not None:
        print(f"error kept in the result: {result.error.stage}: {result.error.message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
