"""Teach a tokenizer the verbalized-confidence block: its tags and the scores 0..10 as whole tokens.

A model whose tokenizer has no digits (the reference model's word-level vocabulary) cannot write a score at all;
one whose tokenizer has them still learns the block faster when each tag is one token. ``extend_vocabulary`` adds
the missing ones as ordinary (non-special) tokens, so that decoding keeps them in the text the guard parses, and
resizes the model's embeddings to match.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONFIDENCE_TOKENS", "SCORE_TOKENS", "extend_vocabulary"]

CONFIDENCE_TOKENS: tuple[str, ...] = (
    "<analysis>",
    "</analysis>",
    "<confidence>",
    "</confidence>",
    "<vision_confidence>",
    "</vision_confidence>",
    "<reasoning_confidence>",
    "</reasoning_confidence>",
)
SCORE_TOKENS: tuple[str, ...] = tuple(str(score) for score in range(11))


def extend_vocabulary(model: Any, processor: Any, tokens: tuple[str, ...] = CONFIDENCE_TOKENS + SCORE_TOKENS) -> int:
    """Add the ``tokens`` the processor's tokenizer lacks as whole tokens; resize ``model``; the number added."""
    tokenizer = getattr(processor, "tokenizer", processor)
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if not missing:
        return 0
    added = int(tokenizer.add_tokens(missing, special_tokens=False))
    model.resize_token_embeddings(len(tokenizer))
    return added
