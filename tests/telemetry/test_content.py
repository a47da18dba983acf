"""Opt-in message content: images are identified by hash and size (or URL), never carried."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import quote

from guardrail import Generation, ImageBlock, Request
from guardrail.telemetry._content import image_reference, input_messages, output_messages

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def test_an_inline_image_becomes_its_digest_and_size() -> None:
    part = image_reference(ImageBlock.from_bytes(PNG))
    assert part == {
        "type": "file",
        "modality": "image",
        "file_id": "sha256:" + hashlib.sha256(PNG).hexdigest(),
        "size": len(PNG),
        "mime_type": "image/png",
    }


def test_a_data_url_is_hashed_like_inline_data() -> None:
    url = "data:image/jpeg;base64," + base64.b64encode(PNG).decode()
    part = image_reference(ImageBlock(url=url))
    assert part["file_id"] == "sha256:" + hashlib.sha256(PNG).hexdigest()
    assert part["mime_type"] == "image/jpeg"
    assert base64.b64encode(PNG).decode() not in json.dumps(part)


def test_a_percent_encoded_data_url_is_hashed_as_its_exact_bytes() -> None:
    part = image_reference(ImageBlock(url="data:image/png," + quote(PNG, safe="")))
    assert part["file_id"] == "sha256:" + hashlib.sha256(PNG).hexdigest()
    assert part["size"] == len(PNG)


def test_unreadable_inline_data_is_identified_by_the_text_given() -> None:
    part = image_reference(ImageBlock(url="data:image/png;base64,not base64!"))
    assert part["file_id"] == "sha256:" + hashlib.sha256(b"not base64!").hexdigest()
    assert part["mime_type"] == "image/png"


def test_a_remote_image_is_kept_as_its_url() -> None:
    assert image_reference(ImageBlock(url="https://example.org/cat.png")) == {
        "type": "uri",
        "modality": "image",
        "uri": "https://example.org/cat.png",
    }


def test_messages_follow_the_genai_parts_shape() -> None:
    request = Request.from_question("What shape?", [ImageBlock.from_bytes(PNG)], system="Be brief.")
    system, user = json.loads(input_messages(request))
    assert system == {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]}
    assert [p["type"] for p in user["parts"]] == ["file", "text"]
    (output,) = json.loads(output_messages(Generation(text="\\boxed{circle}", answer="circle", finish_reason="length")))
    assert output == {
        "role": "assistant",
        "parts": [{"type": "text", "content": "\\boxed{circle}"}],
        "finish_reason": "length",
    }
    (unknown,) = json.loads(output_messages(Generation(text="\\boxed{circle}")))
    assert "finish_reason" not in unknown  # the backend did not say: never invented
