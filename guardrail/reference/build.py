"""Builds the untrained reference model, its tokenizer and its processor, fully offline.

The reference model is an ordinary ``transformers`` LLaVA model (``LlavaForConditionalGeneration``): a tiny CLIP
vision tower (8 px patches on 64x64 easy-VQA images, 64 image tokens), a two-layer MLP projector, and a tiny Llama
text model. Its tokenizer is word-level (built with the ``tokenizers`` library over the easy-VQA questions and
the answer texts, byte-level pre-tokenised so that decoding restores the exact text) and wrapped in
``PreTrainedTokenizerFast``; the structured-answer tags are whole tokens. The processor is a ``LlavaProcessor``
with the PIL CLIP image processor and a chat template, so the saved folder loads with plain
``AutoProcessor.from_pretrained`` and ``AutoModelForImageTextToText.from_pretrained``.

Everything here is generic transformers API; the library never special-cases this model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..data.easyvqa import COLORS, SHAPES, Example, Scene, expected_yes_no

__all__ = [
    "CHAT_TEMPLATE",
    "IMAGE_SIZE",
    "PATCH_SIZE",
    "TAG_TOKENS",
    "ModelSize",
    "answer_text",
    "build_model",
    "build_processor",
    "prompt_text",
    "vision_text",
]

IMAGE_SIZE = 64
PATCH_SIZE = 8
IMAGE_TOKEN = "<image>"
TAG_TOKENS: tuple[str, ...] = (
    "<think>",
    "</think>",
    "<vision>",
    "</vision>",
    "<reasoning>",
    "</reasoning>",
    "\\boxed{",
)
SPECIAL_TOKENS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}

# A LLaVA-1.5-style template: "USER: <image>\n{question}\nASSISTANT:" and the answer ends with the EOS token.
# The user's text is lowercased, as every training question was: the word-level vocabulary has no capitalised
# question words, so "What" would otherwise be an unknown token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}SYSTEM: {% elif message['role'] == 'user' %}USER: "
    "{% else %}ASSISTANT:{% endif %}"
    "{% if message['content'] is string %}"
    "{{ message['content'] | lower if message['role'] == 'user' else message['content'] }}"
    "{% else %}{% for block in message['content'] %}"
    "{% if block['type'] == 'image' %}<image>{{ '\\n' }}"
    "{% elif block['type'] == 'text' %}{{ block['text'] | lower if message['role'] == 'user' else block['text'] }}"
    "{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@dataclass(frozen=True)
class ModelSize:
    """Widths and depths of the reference model; the defaults give about 0.6 M parameters (2.5 MB)."""

    patch_size: int = PATCH_SIZE
    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4


def prompt_text(question: str) -> str:
    """The rendered chat prompt for one image and one question (what ``CHAT_TEMPLATE`` produces)."""
    return f"USER: {IMAGE_TOKEN}\n{question.lower()}\nASSISTANT:"


def vision_text(scene: Scene) -> str:
    """What the model says it sees: ``"I see a red circle."``."""
    return f"I see a {scene.color} {scene.shape}."


def _subject_phrase(subject: str) -> str:
    return f"{subject} shape" if subject in COLORS else subject


def reasoning_text(example: Example) -> str:
    """The short deduction from the scene to the answer, by question type."""
    scene = example.scene
    if example.question_type == "color":
        return f"The shape is {scene.color}."
    if example.question_type == "shape":
        return f"The shape is a {scene.shape}."
    subject = example.subject or ""
    present = subject in (scene.shape, scene.color)
    seen = f"There is a {_subject_phrase(subject)}" if present else f"There is no {_subject_phrase(subject)}"
    answer = expected_yes_no(scene, example.question_type, subject)
    if example.question_type == "negated_yes_no":
        return f"{seen}; asked if not, so {answer}."
    return f"{seen}, so {answer}."


def answer_text(example: Example) -> str:
    """The full structured answer (METHOD.md section 2, without a verbalized confidence block)."""
    return (
        f"<think><vision>{vision_text(example.scene)}</vision>"
        f"<reasoning>{reasoning_text(example)}</reasoning></think> \\boxed{{{example.answer}}}"
    )


def split_at_tags(text: str) -> list[str]:
    """``text`` cut at the image and tag tokens (which the tokenizer splits off first), empty pieces dropped."""
    return [piece for piece in _TAGS.split(text) if piece]


_TAGS = re.compile("|".join(re.escape(t) for t in (IMAGE_TOKEN, *TAG_TOKENS)))


def _corpus(examples: Iterable[Example]) -> Iterable[str]:
    """Texts to collect the vocabulary from, cut at the tag tokens (which the tokenizer splits off first)."""
    yield "SYSTEM: system\n"
    for e in examples:
        yield from split_at_tags(prompt_text(e.question) + answer_text(e))
    for color in COLORS:
        for shape in SHAPES:
            yield f"I see a {color} {shape}. There is a {color} shape. There is no {shape}."


def build_tokenizer(examples: Iterable[Example], corpus: Iterable[str] | None = None) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over the words of ``examples`` and the answer texts (or over
    ``corpus``, texts already cut at the tag tokens, for another world)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS["pad"], SPECIAL_TOKENS["unk"], SPECIAL_TOKENS["bos"], SPECIAL_TOKENS["eos"]]
    core = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk"]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.WordLevelTrainer(special_tokens=[*specials, IMAGE_TOKEN, *TAG_TOKENS], min_frequency=1)
    core.train_from_iterator(_corpus(examples) if corpus is None else corpus, trainer=trainer)
    tokenizer_class: Any = PreTrainedTokenizerFast  # untyped constructor in transformers' stubs
    tokenizer = tokenizer_class(
        tokenizer_object=core,
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=256,
    )
    tokenizer.add_tokens(list(TAG_TOKENS))
    return tokenizer


def build_processor(
    examples: Iterable[Example], patch_size: int = PATCH_SIZE, *, corpus: Iterable[str] | None = None
) -> Any:
    """A ``LlavaProcessor``: the PIL CLIP image processor at 64x64, the word-level tokenizer, the chat template."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor_class: Any = LlavaProcessor  # untyped constructor in transformers' stubs
    return processor_class(
        image_processor=image_processor,
        tokenizer=build_tokenizer(examples, corpus),
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )


def build_model(processor: Any, size: ModelSize | None = None, *, seed: int = 0) -> Any:
    """A freshly initialised (seeded) ``LlavaForConditionalGeneration`` sized by ``size``."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    size = size or ModelSize()
    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=size.vision_hidden,
        intermediate_size=2 * size.vision_hidden,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=IMAGE_SIZE,
        patch_size=size.patch_size,
        projection_dim=size.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.text_hidden,
        intermediate_size=2 * size.text_hidden,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(IMAGE_SIZE // size.patch_size) ** 2,
        tie_word_embeddings=True,
    )
    config.max_images = 1  # trained on one image per prompt: more views replace the image rather than add to it
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.do_sample = False
    return model
