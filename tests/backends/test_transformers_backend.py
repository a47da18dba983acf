"""The transformers backend's own behaviour (on the tiny LLaVA): sampling, offsets, errors, loading, dtype."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import torch
from PIL import Image

from guardrail import AsyncBackend, BackendError, GenerationOptions, ImageBlock, ImageError, Request
from guardrail.backends import ScoringBackend, TransformersBackend
from guardrail.backends.base import FloatTolerance
from guardrail.backends.transformers import resolve_device, resolve_dtype
from tests.support.model_outputs import assert_same_model_output
from tests.support.tiny_vlms import BUILDERS


def test_is_a_scoring_backend(llava_backend: TransformersBackend) -> None:
    assert isinstance(llava_backend, ScoringBackend)
    assert llava_backend.name == "llava"
    assert llava_backend.patch_size == 14


def test_greedy_is_deterministic(llava_backend: TransformersBackend, question: Request) -> None:
    a = llava_backend.generate(question, GenerationOptions())
    b = llava_backend.generate(question, GenerationOptions(attempt=1))  # re-asks stay greedy unless configured
    assert_same_model_output(a, b, ignore={"options"})  # the options name the attempt


def test_agenerate_matches_generate(llava_backend: TransformersBackend, question: Request) -> None:
    assert isinstance(llava_backend, AsyncBackend)
    gen = asyncio.run(llava_backend.agenerate(question, GenerationOptions()))
    assert gen.token_ids == llava_backend.generate(question, GenerationOptions()).token_ids


def test_sampling_is_seeded(llava_backend: TransformersBackend, question: Request) -> None:
    runs = [
        llava_backend.generate(question, GenerationOptions(temperature=1.5, seed=seed)).token_ids for seed in (1, 1, 2)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_sample_reasks_option(question: Request) -> None:
    model, processor = BUILDERS["llava"]()
    backend = TransformersBackend(model, processor, max_new_tokens=12, sample_reasks=True, reask_temperature=2.0)
    first = backend.generate(question, GenerationOptions(attempt=0)).token_ids
    reasks = {backend.generate(question, GenerationOptions(attempt=k)).token_ids for k in (1, 2)}
    assert first not in reasks
    assert len(reasks) == 2


def test_token_offsets_tile_the_text(llava_backend: TransformersBackend, question: Request) -> None:
    ids = llava_backend.tokenizer.encode("héllo <eos>wörld", add_special_tokens=False)
    offsets = llava_backend.token_offsets(ids)
    text = llava_backend.tokenizer.decode(ids, skip_special_tokens=True)
    assert text == "héllo wörld"
    assert offsets[0][0] == 0
    assert offsets[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(offsets))


def test_special_tag_tokens_stay_visible() -> None:
    model, processor = BUILDERS["llava"]()
    processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<vision>", "</vision>", "\\boxed{"]})
    backend = TransformersBackend(model, processor)
    ids = processor.tokenizer.encode("<vision>red</vision>\\boxed{red}<eos><image>", add_special_tokens=False)
    offsets = backend.token_offsets(ids)
    assert offsets[-1][1] == len("<vision>red</vision>\\boxed{red}")
    assert offsets[-2][0] == offsets[-2][1]  # <eos> is hidden


def _png_bytes(size: tuple[int, int] = (20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (ImageBlock.from_bytes(b"not an image"), "not a recognised image format"),
        (ImageBlock(base64=""), "empty"),
        (ImageBlock.from_bytes(_png_bytes()[:60]), "truncated or corrupt"),
        (ImageBlock(base64="%%%"), "base64 data is not valid"),
        (ImageBlock(url="/nonexistent/x.png"), "no such file"),
        (ImageBlock(url="https://example.com/x.png"), "remote URLs are not fetched"),
    ],
)
def test_bad_images_are_image_errors(llava_backend: TransformersBackend, block: ImageBlock, message: str) -> None:
    request = Request.from_question("?", [block])
    with pytest.raises(ImageError, match=message):
        llava_backend.generate(request, GenerationOptions())


def test_decompression_bomb_limit(question: Request) -> None:
    model, processor = BUILDERS["llava"]()
    backend = TransformersBackend(model, processor, max_image_pixels=100)
    with pytest.raises(ImageError, match="exceeds the limit of 100"):
        backend.generate(question, GenerationOptions())


def test_data_and_file_urls(llava_backend: TransformersBackend, tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png_bytes((30, 10)))
    data_url = "data:image/png;base64," + base64.b64encode(_png_bytes((30, 10))).decode()
    percent_encoded = "data:image/png," + quote(_png_bytes((30, 10)), safe="")  # PNG bytes are not UTF-8
    for url in (str(path), path.as_uri(), data_url, percent_encoded):
        request = Request.from_question("?", [ImageBlock(url=url)])
        assert llava_backend.images(request)[0].size == (30, 10)


def test_scoring_errors_are_backend_errors(llava_backend: TransformersBackend, question: Request) -> None:
    with pytest.raises(BackendError, match="empty answer"):
        llava_backend.score(question, [])
    with pytest.raises(BackendError, match="variant 0 has 2 images, the request has 1"):
        llava_backend.score(question, [1, 2], [[Image.new("RGB", (28, 28))] * 2])
    with pytest.raises(BackendError, match="teacher-forced scoring failed"):
        llava_backend.score(question, [10_000, 1])  # outside the vocabulary


def test_variants_of_another_size_are_refused(question: Request) -> None:
    model, processor = BUILDERS["qwen2_vl"]()
    backend = TransformersBackend(model, processor)
    with pytest.raises(BackendError, match="tokenises differently"):
        backend.score(question, [1, 2], [[Image.new("RGB", (112, 112))]])


def test_from_pretrained_round_trip(question: Request, tmp_path: Path) -> None:
    model, processor = BUILDERS["llava"]()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = TransformersBackend.from_pretrained(tmp_path, device="cpu", max_new_tokens=6)
    original = TransformersBackend(model, processor, max_new_tokens=6)
    assert loaded.name == tmp_path.name
    a, b = loaded.generate(question), original.generate(question)
    assert_same_model_output(a, b, ignore={"model"}, name="loaded")  # another load: floats within the tolerance


def test_from_pretrained_without_a_full_processor(question: Request, tmp_path: Path) -> None:
    model, processor = BUILDERS["qwen2_vl"]()
    model.save_pretrained(tmp_path)
    processor.tokenizer.chat_template = processor.chat_template
    processor.tokenizer.save_pretrained(tmp_path)
    processor.image_processor.save_pretrained(tmp_path)
    loaded = TransformersBackend.from_pretrained(tmp_path, max_new_tokens=4)
    gen = loaded.generate(question)
    scores = loaded.score(question, gen.token_ids)
    assert_same_model_output(tuple(scores.token_logprobs[0].tolist()), gen.token_logprobs, name="re-scored")


def test_from_pretrained_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        TransformersBackend.from_pretrained(tmp_path / "nope")
    with pytest.raises(BackendError, match="cannot load a vision-language model"):
        TransformersBackend.from_pretrained(tmp_path)


def test_dtype_option(question: Request) -> None:
    model, processor = BUILDERS["llava"]()
    backend = TransformersBackend(model, processor, dtype="bfloat16", max_new_tokens=4)
    assert backend.model.dtype == torch.bfloat16
    gen = backend.generate(question)
    scores = backend.score(question, gen.token_ids)
    # bfloat16 keeps 8 bits of a value (2-3 digits), not float32's 24: its own tolerance, not the model-output one
    assert_same_model_output(
        tuple(scores.token_logprobs[0].tolist()), gen.token_logprobs, tolerance=FloatTolerance(0.05, 0.05)
    )


def test_device_and_dtype_resolution() -> None:
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype(None) is None
    assert resolve_dtype("float16") is torch.float16
    assert resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="`dtype` must name a torch dtype"):
        resolve_dtype("float99")
    with pytest.raises(ValueError, match="`max_new_tokens` must be an int >= 1"):
        TransformersBackend(torch.nn.Linear(1, 1), None, max_new_tokens=0)


def test_import_guardrail_stays_light() -> None:
    code = (
        "import sys, guardrail, guardrail.backends, guardrail.confidence;"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_answer_length_comes_from_the_model_generation_config(tmp_path: Path) -> None:
    from tests.support.tiny_vlms import save_tiny_llava

    save_tiny_llava(tmp_path, max_new_tokens=7)
    assert TransformersBackend.from_pretrained(tmp_path).max_new_tokens == 7
    assert TransformersBackend.from_pretrained(tmp_path, max_new_tokens=3).max_new_tokens == 3


def test_max_images_comes_from_the_argument_or_the_model_folders_config(tmp_path: Path) -> None:
    import json

    from tests.support.tiny_vlms import save_tiny_llava

    save_tiny_llava(tmp_path)
    assert TransformersBackend.from_pretrained(tmp_path).max_images is None  # not declared
    config = tmp_path / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "max_images": 1}))
    assert TransformersBackend.from_pretrained(tmp_path).max_images == 1
    assert TransformersBackend.from_pretrained(tmp_path, max_images=2).max_images == 2
    assert TransformersBackend.from_pretrained(tmp_path, max_images=None).max_images is None
    config.write_text(json.dumps({**data, "max_images": 0}))
    with pytest.raises(BackendError, match=r"config\.json max_images must be an int >= 1, got 0"):
        TransformersBackend.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "1"])
def test_max_images_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="`max_images` must be an int >= 1 or None"):
        TransformersBackend(torch.nn.Linear(1, 1), None, max_images=bad)  # type: ignore[arg-type]
    assert TransformersBackend(torch.nn.Linear(1, 1), None, max_images=3).max_images == 3


def test_finish_reason_and_the_options_it_generated_with(llava_backend: TransformersBackend, question: Request) -> None:
    cut = llava_backend.generate(question, GenerationOptions(max_new_tokens=2))
    assert (cut.finish_reason, cut.usage.output_tokens) == ("length", 2)
    assert cut.options == GenerationOptions(seed=0, temperature=0.0, max_new_tokens=2)
    default = llava_backend.generate(question, GenerationOptions(attempt=1, seed=5))
    assert default.options == GenerationOptions(attempt=1, seed=5, temperature=0.0, max_new_tokens=12)
    ended = default.finish_reason == "stop"
    assert ended == (default.usage.output_tokens < 12 or default.token_ids[-1] == llava_backend.tokenizer.eos_token_id)


def test_a_stop_string_ends_generation(llava_backend: TransformersBackend, question: Request) -> None:
    full = llava_backend.generate(question, GenerationOptions())
    decode = llava_backend.tokenizer.decode
    # A printable token of the (random) answer that the text before it does not already contain.
    index, stop = next(
        (i, decode([t]))
        for i, t in enumerate(full.token_ids)
        if i > 0 and decode([t]).isprintable() and decode([t]).isascii() and decode([t]).strip()
        and decode([t]) not in decode(list(full.token_ids[:i]))
    )  # fmt: skip
    stopped = llava_backend.generate(question, GenerationOptions(stop=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[: index + 1]
    assert stopped.options is not None
    assert stopped.options.stop == (stop,)


def test_a_stop_string_no_token_can_spell_is_left_out(llava_backend: TransformersBackend, question: Request) -> None:
    unspellable = "\u2603\u2603"  # transformers refuses stop strings the vocabulary cannot spell; none is generated
    generation = llava_backend.generate(question, GenerationOptions(stop=(unspellable,)))
    assert generation.text == llava_backend.generate(question, GenerationOptions()).text
