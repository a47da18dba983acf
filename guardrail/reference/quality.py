"""How well an image-text model answers easy-VQA: perception, answer and reasoning accuracy, image reliance.

Works on any ``transformers`` image-text-to-text model and processor that take the chat-template message shape
(the reference model is one such model); used by ``bench/reference_quality.py`` and the slow quality test.

- **perception correct**: the ``<vision>`` span names exactly the scene's colour and shape;
- **answer correct**: the ``\\boxed{}`` content equals the easy-VQA answer;
- **reasoning error**: answer wrong although perception was right;
- **image reliance**: the full-vocabulary KL(p_clean || p_black) of the next-token distributions along the
  model's own clean-image answer, teacher-forced on the clean image and on an all-black image. Summed over the
  answer's tokens it is (by the chain rule, estimated along the greedy answer) the KL between the model's
  distributions over whole answers given the two images; the per-token means are reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..data.easyvqa import COLORS, SHAPES, Example
from ..responses import answers_match, grade_perception, parse_response

__all__ = [
    "Graded",
    "black_image_kl",
    "generate_answers",
    "grade",
    "messages_for",
]


@dataclass(frozen=True)
class Graded:
    """One graded answer."""

    text: str
    perception_correct: bool
    answer_correct: bool

    @property
    def reasoning_error(self) -> bool:
        """Wrong answer although the model saw the scene right."""
        return self.perception_correct and not self.answer_correct


def grade(example: Example, text: str) -> Graded:
    """Grades one generated ``text`` against ``example``'s scene and answer."""
    parsed = parse_response(text)
    expected = (example.scene.color, example.scene.shape)
    # Without a <vision> span there is no stated perception to credit (parse_response would fall back to the text).
    perception = parsed.has_vision_tag and bool(grade_perception(parsed.perception_text, expected, (*COLORS, *SHAPES)))
    return Graded(
        text=text, perception_correct=perception, answer_correct=answers_match(parsed.answer_text, example.answer)
    )


def messages_for(question: str) -> list[dict[str, Any]]:
    """One user turn with one image and the question, in the chat-template message shape."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def _inputs(processor: Any, images: Sequence[Image.Image], questions: Sequence[str]) -> Any:
    prompts = [processor.apply_chat_template(messages_for(q), add_generation_prompt=True) for q in questions]
    return processor(images=list(images), text=prompts, return_tensors="pt", padding=True)


def generate_answers(
    model: Any,
    processor: Any,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    *,
    batch_size: int = 64,
    max_new_tokens: int = 48,
) -> list[str]:
    """Greedy answers, one per (image, question) pair, decoded without special tokens."""
    import torch

    texts: list[str] = []
    for first in range(0, len(questions), batch_size):
        inputs = _inputs(processor, images[first : first + batch_size], questions[first : first + batch_size])
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        texts.extend(processor.batch_decode(new, skip_special_tokens=True))
    return texts


def black_image_kl(
    model: Any,
    processor: Any,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    answers: Sequence[str],
) -> dict[str, float]:
    """KL(p_clean || p_black) in nats along each given answer, teacher-forced, averaged over the answers.

    ``sequence``: the sum over the answer's tokens (the KL between whole-answer distributions, estimated along
    the given answer); ``all``: the mean per token; ``vision``: the mean over the ``<vision>`` span;
    ``boxed``: the mean over the tokens inside ``\\boxed{}`` (which, after a chain of thought, mostly follow
    from the text already written rather than from the image).
    """
    import torch

    tokenizer = processor.tokenizer
    results: dict[str, list[float]] = {"sequence": [], "all": [], "vision": [], "boxed": []}
    for image, question, answer in zip(images, questions, answers, strict=True):
        prompt = processor.apply_chat_template(messages_for(question), add_generation_prompt=True)
        black = Image.new("RGB", image.size, (0, 0, 0))
        inputs = processor(images=[image, black], text=[prompt + answer] * 2, return_tensors="pt")
        n_prompt = processor(images=[image], text=[prompt], return_tensors="pt")["input_ids"].shape[1]
        with torch.inference_mode():
            logits = model(**inputs).logits[:, n_prompt - 1 : -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        kl = (logp[0].exp() * (logp[0] - logp[1])).sum(-1)  # (answer_tokens,)
        pieces = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0, n_prompt:].tolist())
        results["sequence"].append(float(kl.sum()))
        results["all"].append(float(kl.mean()))
        spans = {"vision": _span(pieces, "<vision>", "</vision>"), "boxed": _span(pieces, "\\boxed{", "}")}
        for name, (lo, hi) in spans.items():
            if hi > lo:
                results[name].append(float(kl[lo:hi].mean()))
    return {k: (sum(v) / len(v) if v else float("nan")) for k, v in results.items()}


def _span(pieces: Sequence[str], open_tag: str, close_tag: str) -> tuple[int, int]:
    """Token positions strictly between the first ``open_tag`` and the next ``close_tag`` ((0, 0) if absent)."""
    try:
        lo = pieces.index(open_tag) + 1
        hi = pieces.index(close_tag, lo)
    except ValueError:
        return 0, 0
    return lo, hi
