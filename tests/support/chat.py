"""A scripted vision-language model for the chat-model tests: it answers any question, obeys the token limit, and
scores itself (so a guard over it accepts, abstains or escalates as scripted).

``WordModel`` answers a question that asks for JSON with a fixed JSON object and anything else with a fixed
sentence, one "token" per word: the token limit cuts the answer (finish reason ``length``), usage counts words.
It ignores stop sequences on purpose, so that the chat model's own cut at a stop sequence is what is tested.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from guardrail import Generation, GenerationOptions, Request, Signals, Usage
from guardrail.backends.base import Backend

SENTENCE = "<think><vision>a red circle</vision><reasoning>it is red</reasoning></think> The shape is \\boxed{red}"
JSON_ANSWER = '{"setup": "Why did the cat sit on the computer?", "punchline": "To keep an eye on the mouse."}'


@dataclass
class WordModel:
    """Answers every question (see the module docstring); ``visual`` / ``reasoning`` are its scripted scores."""

    name: str = "word-model"
    visual: float = 0.9
    reasoning: float = 0.9
    calls: list[tuple[Request, GenerationOptions]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        with self._lock:
            self.calls.append((request, options))
        text = JSON_ANSWER if "json" in request.question.lower() else SENTENCE
        words = text.split(" ")
        limit = options.max_new_tokens
        cut = limit is not None and len(words) > limit
        kept = words[:limit] if cut else words
        text = " ".join(kept)
        answer = "red" if text.endswith("\\boxed{red}") else None
        return Generation(
            text=text,
            answer=answer,
            model=self.name,
            provider="word",
            token_ids=tuple(range(len(kept))),
            token_logprobs=tuple(-0.1 for _ in kept),
            usage=Usage(input_tokens=len(request.question.split()), output_tokens=len(kept)),
            finish_reason="length" if cut else "stop",
            options=options,
        )

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        return Signals(visual=self.visual, reasoning=self.reasoning)


@dataclass
class AsyncWordModel(WordModel):
    """The same model behind an async ``agenerate``."""

    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        return self.generate(request, options)
