"""Tiny random-initialised vision-language models of each supported family, built offline from configs.

Each builder returns ``(model, processor)``: a few-thousand-parameter model and a processor whose tokenizer is a
byte-level BPE without merges (every byte is a token, so any text round-trips exactly) plus the family's special
tokens. The PIL image processors are used, so nothing needs torchvision or a model hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from guardrail.backends._vision_inputs import TokenExpandingProcessor

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for block in message['content'] %}"
    "{% if block['type'] == 'image' %}{{ IMAGE }}{% else %}{{ block['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

SPECIAL = [
    "<eos>",
    "<pad>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: 256 byte tokens plus the special tokens of every family (ids 256..)."""
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    tokenizer_class: Any = PreTrainedTokenizerFast  # an unannotated constructor in transformers
    fast: PreTrainedTokenizerFast = tokenizer_class(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    return fast


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one token (``convert_tokens_to_ids`` also maps lists, hence its ``int | list[int]``)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(token_id, int)
    return token_id


def _text_config(vocab_size: int, **extra: Any) -> dict[str, Any]:
    eos = vocab_size - len(SPECIAL)  # "<eos>", the first special token
    return {
        "vocab_size": vocab_size,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos + 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        **extra,
    }


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    model.eval()  # type: ignore[no-untyped-call]  # transformers leaves PreTrainedModel.eval unannotated
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def tiny_llava(seed: int = 0) -> tuple[Any, Any]:
    """A LLaVA model: CLIP vision tower (28 px, 14 px patches -> 4 image tokens) and a Llama text model."""
    tokenizer = tiny_tokenizer()
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        text_config={"model_type": "llama", **_text_config(len(tokenizer))},
        image_token_index=_token_id(tokenizer, "<image>"),  # the field behind LLaVA's `image_token_id` alias
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    image_processor = LlavaImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor_class: Any = LlavaProcessor  # an unannotated constructor in transformers
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE.replace("{{ IMAGE }}", "<image>"),
    )
    return _finish(model, tokenizer), processor


def tiny_idefics3(seed: int = 0) -> tuple[Any, Any]:
    """An Idefics3/SmolVLM model: SigLIP-like tower (28 px tiles, 14 px patches), pixel shuffle 2 -> 1 token."""
    tokenizer = tiny_tokenizer()
    config = Idefics3Config(
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        text_config={"model_type": "llama", **_text_config(len(tokenizer))},
        image_token_id=_token_id(tokenizer, "<image>"),
        scale_factor=2,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 28}, max_image_size={"longest_edge": 28}, do_image_splitting=False
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=1,
        chat_template=CHAT_TEMPLATE.replace("{{ IMAGE }}", "<image>"),
    )
    return _finish(model, tokenizer), processor


def _qwen_parts(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    return {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _qwen_processor(tokenizer: PreTrainedTokenizerFast) -> TokenExpandingProcessor:
    """Qwen2VLProcessor needs a video processor, hence torchvision: use the backend's own tokenizer + images."""
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    template = CHAT_TEMPLATE.replace("{{ IMAGE }}", "<|vision_start|><|image_pad|><|vision_end|>")
    return TokenExpandingProcessor(tokenizer, image_processor, chat_template=template)


def tiny_qwen2_vl(seed: int = 0) -> tuple[Any, Any]:
    """A Qwen2-VL model: 14 px patches merged 2x2, M-RoPE text model."""
    tokenizer = tiny_tokenizer()
    head_dim = 8
    config = Qwen2VLConfig(
        vision_config={
            "depth": 1,
            "embed_dim": 16,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_chans": 3,
        },
        text_config={
            **_text_config(len(tokenizer)),
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
            "head_dim": head_dim,
        },
        **_qwen_parts(tokenizer),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    return _finish(model, tokenizer), _qwen_processor(tokenizer)


def tiny_qwen2_5_vl(seed: int = 0) -> tuple[Any, Any]:
    """A Qwen2.5-VL model: windowed-attention vision tower, 14 px patches merged 2x2, M-RoPE text model."""
    tokenizer = tiny_tokenizer()
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [0],
            "in_channels": 3,
        },
        text_config={
            **_text_config(len(tokenizer)),
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
            "head_dim": 8,
        },
        **_qwen_parts(tokenizer),
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return _finish(model, tokenizer), _qwen_processor(tokenizer)


BUILDERS = {
    "llava": tiny_llava,
    "idefics3": tiny_idefics3,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": tiny_qwen2_5_vl,
}


def save_tiny_llava(path: Path, *, max_new_tokens: int = 24) -> Path:
    """A tiny random LLaVA saved as a model folder, with a short answer limit in its generation config."""
    model, processor = tiny_llava()
    model.generation_config.max_new_tokens = max_new_tokens
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
