"""LangChain messages <-> guardrail Request: every accepted image form, round trips, and precise errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from guardrail import ImageBlock, InputError, Request, TextBlock
from guardrail.messages import (
    has_images,
    image_blocks_of,
    message_from_guardrail,
    messages_from_request,
    request_from_messages,
)
from tests.support.integration import image_message, png_b64, png_bytes

B64 = png_b64()


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "base64": B64, "mime_type": "image/png"},
        {"type": "image", "url": f"data:image/png;base64,{B64}"},
        {"type": "image", "source_type": "base64", "data": B64, "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
        {"type": "image_url", "image_url": f"data:image/png;base64,{B64}"},
    ],
    ids=["v1-base64", "v1-data-url", "v0-base64", "openai-data-url", "openai-plain-string"],
)
def test_inline_image_forms_become_the_same_inline_block(block: dict[str, object]) -> None:
    request = request_from_messages([HumanMessage(content=[block, {"type": "text", "text": "What colour?"}])])
    assert request.images == (ImageBlock(base64=B64, mime_type="image/png"),)
    assert request.question == "What colour?"


def test_a_percent_encoded_data_url_becomes_the_inline_block_of_its_exact_bytes() -> None:
    data = png_bytes()  # PNG bytes are not UTF-8 (0x89 first)
    url = "data:image/png," + quote(data, safe="")
    request = request_from_messages([HumanMessage(content=[{"type": "image_url", "image_url": {"url": url}}])])
    assert request.images == (ImageBlock.from_bytes(data, "image/png"),)


def test_http_urls_are_kept_as_urls() -> None:
    blocks: list[str | dict[str, Any]] = [
        {"type": "image", "url": "https://example.org/a.png"},
        {"type": "image", "source_type": "url", "url": "https://example.org/b.png"},
    ]
    request = request_from_messages([HumanMessage(content=blocks)])
    assert [im.url for im in request.images] == ["https://example.org/a.png", "https://example.org/b.png"]


def test_roles_system_prompt_and_tool_results() -> None:
    tool = ToolMessage(
        content=[{"type": "image", "base64": B64, "mime_type": "image/png"}], tool_call_id="c", name="camera"
    )
    request = request_from_messages(
        [HumanMessage(content="hi"), AIMessage(content="hello"), tool], system=SystemMessage(content="Be brief.")
    )
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.messages[0].text == "Be brief."
    assert request.messages[3].content[0] == TextBlock(text="Result of tool 'camera':")
    assert len(request.images) == 1


def test_round_trip_through_standard_blocks_is_lossless() -> None:
    original = Request.from_question("What shape?", [png_bytes()], system="You look at images.")
    messages = messages_from_request(original)
    assert isinstance(messages[0], SystemMessage)
    assert messages[1].content[0] == {"type": "image", "base64": original.images[0].base64, "mime_type": "image/png"}
    assert request_from_messages(messages).messages == original.messages


def test_text_only_messages_convert_to_plain_strings() -> None:
    back = message_from_guardrail(request_from_messages([AIMessage(content="red")]).messages[0])
    assert isinstance(back, AIMessage)
    assert back.content == "red"


def test_has_images_and_image_blocks_of() -> None:
    assert has_images([HumanMessage(content="no"), image_message()])
    assert not has_images([HumanMessage(content="no"), HumanMessage(content=[{"type": "text", "text": "x"}])])
    assert len(image_blocks_of(image_message())) == 1
    assert image_blocks_of(HumanMessage(content="plain")) == ()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            [{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}],
            r"content\[0\]: content block of type 'audio'",
        ),
        ([{"type": "image", "file_id": "file-1"}], r"content\[0\]: image by file_id 'file-1' cannot be read"),
        ([{"type": "image", "base64": "not base64!!"}], r"content\[0\]: image: base64 data is not valid"),
        (
            [{"type": "image", "url": "data:image/png;base64,not base64!!"}],
            r"content\[0\]: data URL: base64 data is not valid",
        ),
        (
            [{"type": "image", "url": "data:image/png;base64"}],
            r"content\[0\]: data URL 'data:image/png;base64' has no ','",
        ),
        ([{"type": "image"}], r"content\[0\]: image block has neither 'base64' nor 'url'"),
        ([{"type": "image", "source_type": "id", "id": "x"}], r"content\[0\]: image source_type 'id' is not supported"),
        ([{"type": "text", "text": 3}], r"content\[0\]: text block has no string 'text'"),
    ],
)
def test_unconvertible_blocks_are_input_errors_naming_the_block(content: list[object], match: str) -> None:
    with pytest.raises(InputError, match=r"messages\[1\] " + match):
        request_from_messages([HumanMessage(content="first"), HumanMessage(content=content)])  # type: ignore[arg-type]


def test_unknown_message_types_and_empty_conversations_are_refused() -> None:
    with pytest.raises(InputError, match=r"messages\[0\]: a ChatMessage \(type 'chat'\) cannot be sent"):
        request_from_messages([ChatMessage(role="critic", content="x")])
    with pytest.raises(InputError, match="empty conversation"):
        request_from_messages([])
    with pytest.raises(InputError, match="system message cannot carry images"):
        request_from_messages(
            [HumanMessage(content="x")], system=SystemMessage(content=[{"type": "image", "base64": B64}])
        )
