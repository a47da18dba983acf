"""View providers from user code: recapture, callables and tools; failures fall to the policy's on_error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool
from PIL import Image

from guardrail import Guard, ImageBlock, Request, ViewProviderError
from guardrail.integrations import CallableViewProvider, RecaptureProvider, ToolViewProvider, as_view_provider
from guardrail.integrations.views import to_image_blocks
from tests.support.fakes import ScriptedModel, Step
from tests.support.integration import png_b64, png_bytes, policy

REQUEST = Request.from_question("What colour?", [png_bytes()])


def test_recapture_calls_the_camera_once_per_view() -> None:
    shots: list[int] = []

    def capture() -> Image.Image:
        shots.append(1)
        return Image.new("RGB", (8, 8), (0, 0, 255))

    views = RecaptureProvider(capture)(REQUEST, 3)
    assert len(views) == 3
    assert len(shots) == 3
    assert all(isinstance(v, ImageBlock) and v.base64 for v in views)


def test_every_accepted_image_form_converts(tmp_path: Path) -> None:
    path = tmp_path / "shot.png"
    path.write_bytes(png_bytes())
    forms: list[Any] = [
        ImageBlock.from_bytes(png_bytes()),
        Image.new("RGB", (4, 4)),
        png_bytes(),
        path,
        {"type": "image", "base64": png_b64(), "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png_b64()}"}},
        [png_bytes(), png_bytes()],
    ]
    assert len(to_image_blocks(forms)) == 8


def test_callables_and_tools_become_providers() -> None:
    def pages(request: Request, count: int) -> list[bytes]:
        return [png_bytes()] * (count + 2)

    provider = as_view_provider(pages)
    assert isinstance(provider, CallableViewProvider)
    assert len(provider(REQUEST, 2)) == 2  # never more than asked for

    @tool(response_format="content_and_artifact")
    def render(page: int) -> tuple[str, list[dict[str, str]]]:
        """Render a page of the document."""
        return f"page {page}", [{"type": "image", "base64": png_b64(), "mime_type": "image/png"}]

    tool_provider = as_view_provider(render, tool_args=lambda request, count: {"page": 2})
    assert isinstance(tool_provider, ToolViewProvider)
    assert len(tool_provider(REQUEST, 1)) == 1

    @tool(response_format="content")
    def camera() -> list[dict[str, str]]:
        """Photograph the scene."""
        return [{"type": "image", "base64": png_b64(), "mime_type": "image/png"}]

    assert len(as_view_provider(camera)(REQUEST, 3)) == 1


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (list, "recapture: returned no images"),
        (lambda: "a caption", "recapture: returned str, which is not an image"),
        (lambda: b"not an image", "recapture: returned an unusable image: image: not a recognised image format"),
        (lambda: {"type": "image"}, "recapture: returned an unusable image: .*neither 'base64' nor 'url'"),
        (lambda: 1 / 0, "recapture: failed: ZeroDivisionError"),
    ],
)
def test_failures_and_empty_results_are_view_provider_errors(source: Any, match: str) -> None:
    with pytest.raises(ViewProviderError, match=match):
        RecaptureProvider(source)(REQUEST, 1)


def test_a_failing_provider_falls_through_to_on_error() -> None:
    model = ScriptedModel(steps=(Step(visual=0.2, reasoning=0.9), Step()))
    rules = [{"when": {"visual": {"below": 0.5}}, "do": "fetch_more_views", "with": {"views": 2, "provider": "camera"}}]
    guard = Guard(
        model,
        estimator=model,
        policy=policy(rules=rules, budget={"max_attempts": 2}, on_error="abstain"),
        view_providers={"camera": RecaptureProvider(list, name="camera")},
    )
    result = guard.run(REQUEST)
    assert result.status == "abstained"
    assert result.error is not None
    assert (result.error.stage, result.error.type) == ("view_provider", "ViewProviderError")
    assert result.error.message == "camera: returned no images"
    assert len(model.calls) == 1


def test_a_working_recapture_adds_fresh_views_to_the_next_attempt() -> None:
    model = ScriptedModel(steps=(Step(visual=0.2, reasoning=0.9), Step()))
    rules = [{"when": {"visual": {"below": 0.5}}, "do": "fetch_more_views", "with": {"views": 2, "provider": "camera"}}]
    guard = Guard(
        model,
        estimator=model,
        policy=policy(rules=rules, budget={"max_attempts": 2}),
        view_providers={"camera": RecaptureProvider(lambda: Image.new("RGB", (8, 8)))},
    )
    assert guard.run(REQUEST).status == "accepted"
    assert len(model.calls[1][0].images) == 3


def test_constructor_checks() -> None:
    with pytest.raises(TypeError, match="`capture` must be a callable"):
        RecaptureProvider("camera")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`tool` must be a LangChain BaseTool"):
        ToolViewProvider(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`tool_args` applies only to a LangChain tool"):
        as_view_provider(lambda r, c: [], tool_args=lambda r, c: {})
