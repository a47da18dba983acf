"""Generation for the transformers backend: answers with their token ids and log-probs, one or a batch at a time.

Greedy unless sampled (``options.temperature``, or a re-ask with ``sample_reasks``), seeded so that a re-ask is
reproducible; image placeholders are never generated. While the backend keeps references, generation's own prefill
pass also measures each prompt's familiarity evidence (``PrefillCapture``) and row 0 of each answer is kept.

With ``options.assistant_prefix`` the prompt is followed by that text and generation continues from it; the prefill
pass also gives the logits before each prefix token, so the answer's ids and log-probs start with the prefix's,
teacher-forced, exactly as ``score`` would measure them.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import time
from collections.abc import Sequence
from typing import Any

import torch

from ...errors import BackendError
from ...responses import final_answer
from ...types import Generation, GenerationOptions, Request, Usage
from ..logits import token_logprobs
from ._references import PrefillCapture, ReferenceKeeping, row_inputs
from ._state import MODEL_ERRORS

__all__ = ["Generating"]


class Generating(ReferenceKeeping):
    """``generate``, its async twin and ``generate_batch`` over one model (see ``TransformersBackend``)."""

    sample_reasks: bool
    reask_temperature: float

    def _sampling(self, options: GenerationOptions) -> tuple[bool, float | None, int]:
        temperature = options.temperature
        if temperature is None and self.sample_reasks and options.attempt > 0:
            temperature = self.reask_temperature
        seed = options.seed if options.seed is not None else options.attempt
        return bool(temperature and temperature > 0), temperature, seed

    def generate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """Answer ``request``: text, ``\\boxed{}`` answer, token ids, their log-probs (temperature 1), usage."""
        return self._generate_one(request, options or GenerationOptions())

    def _generate_one(self, request: Request, options: GenerationOptions, *, room: int = 0) -> Generation:
        """:meth:`generate`; ``room``: the size of the batch it is part of (see ``KeptReferences.put``)."""
        start = time.perf_counter()
        prompt, prefix = self._prompt_and_prefix(request, options.assistant_prefix)
        self._screen(prompt, options.max_new_tokens)
        inputs = self._encode(prompt, self.images(request))
        self._check_length(int(inputs["input_ids"].shape[1]), options.max_new_tokens)
        config, seed = self._generation_config(options)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        capture: PrefillCapture | None = None
        try:
            with self._lock, torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(seed)
                stop = {"tokenizer": self.tokenizer} if config.stop_strings else {}
                if self._kept.capacity or prefix:
                    with PrefillCapture(self, inputs["input_ids"], [0], [len(prefix)]) as capture:
                        out = self.model.generate(**inputs, generation_config=config, **stop)
                else:
                    out = self.model.generate(**inputs, generation_config=config, **stop)
                prefix_logits = self._prefix_logits(inputs, [len(prefix)], capture)
        except MODEL_ERRORS as exc:
            raise BackendError(f"{self.name}: generation failed: {exc}") from exc
        prompt_len = inputs["input_ids"].shape[1]
        new_ids = out.sequences[0, prompt_len:]
        logits = torch.stack(out.logits, dim=1)[0, : new_ids.shape[0]]
        ids, logits = _with_prefix(prefix, new_ids, None if prefix_logits is None else prefix_logits[0], logits)
        generation = self._generation(
            ids, logits, prompt_len, config, options, seed, time.perf_counter() - start, prefix=len(prefix)
        )
        if capture is not None and capture.evidence is not None and self._kept.capacity:
            integers = (
                row_inputs(inputs, 0, 0, 1, prefix=len(prefix))
                if prefix
                else {k: v for k, v in inputs.items() if not v.is_floating_point()}
            )
            if integers is not None:
                self._keep(request, generation, capture.evidence[0], logits, integers, inputs, room=room)
        return generation

    def _prefix_logits(
        self, inputs: dict[str, torch.Tensor], prefixes: Sequence[int], capture: PrefillCapture | None
    ) -> list[torch.Tensor] | None:
        """The logits before each row's assistant-prefix tokens (``(prefix tokens, vocab)`` per row): the prefill's,
        kept by ``capture``, or, where the model's forward pass could not be asked for them, one teacher-forced pass
        over the prompts; ``None`` when no row has a prefix. Call it under the model lock."""
        if not any(prefixes):
            return None
        if capture is not None and capture.prefix_logits is not None:
            return capture.prefix_logits
        logits = self.model(**inputs).logits
        length = inputs["input_ids"].shape[1]
        return [logits[row, length - 1 - p : length - 1] for row, p in enumerate(prefixes)]

    def generate_batch(
        self, requests: Sequence[Request], options: Sequence[GenerationOptions | None]
    ) -> list[Generation]:
        """Answer several requests with one left-padded generation per group that can share it: greedy requests
        with the same token limit, no stop strings and the same number of images. Others are answered one by one.
        Each answer is what :meth:`generate` gives for its request alone (up to float rounding of the padding)."""
        if len(requests) != len(options):
            raise ValueError(f"{len(requests)} requests but {len(options)} options")
        resolved = [o or GenerationOptions() for o in options]
        groups: dict[tuple[int, int], list[int]] = {}
        alone: list[int] = []
        for i, (request, opts) in enumerate(zip(requests, resolved, strict=True)):
            config, _ = self._generation_config(opts)
            if config.do_sample or config.stop_strings:
                alone.append(i)
            else:
                groups.setdefault((config.max_new_tokens, len(request.images)), []).append(i)
        answers: dict[int, Generation] = {}
        for members in groups.values():
            if len(members) == 1:
                alone.extend(members)
                continue
            together = self._generate_together(
                [requests[i] for i in members], [resolved[i] for i in members], room=len(requests)
            )
            answers.update(zip(members, together, strict=True))
        for i in alone:
            answers[i] = self._generate_one(requests[i], resolved[i], room=len(requests))
        return [answers[i] for i in range(len(requests))]

    def _generate_together(
        self, requests: list[Request], options: list[GenerationOptions], *, room: int
    ) -> list[Generation]:
        """One greedy generation over ``requests`` (same limit, same image count), left-padded; each row keeps its
        reference as :meth:`generate` does (the prefill measures every row's familiarity evidence), with ``room``
        for the whole batch's. A row with an assistant prefix continues from it (its tokens end the row's prompt)."""
        start = time.perf_counter()
        image_rows = [self.images(r) for r in requests]
        prompted = [self._prompt_and_prefix(r, o.assistant_prefix) for r, o in zip(requests, options, strict=True)]
        prefixes = [prefix for _, prefix in prompted]
        inputs = self._encode_batch([prompt for prompt, _ in prompted], image_rows if image_rows[0] else None, pad=True)
        config, _ = self._generation_config(options[0])
        prompt_len = inputs["input_ids"].shape[1]
        mask = inputs.get("attention_mask")
        used = [prompt_len if mask is None else int(mask[row].sum()) for row in range(len(requests))]
        for tokens, opts in zip(used, options, strict=True):  # answer_each checked each alone; this never fires there
            self._check_length(tokens, opts.max_new_tokens)
        pads = [prompt_len - n for n in used]
        lengths = [len(prefix) for prefix in prefixes]
        capture: PrefillCapture | None = None
        try:
            with self._lock, torch.inference_mode():
                if self._kept.capacity or any(lengths):
                    with PrefillCapture(self, inputs["input_ids"], pads, lengths) as capture:
                        out = self.model.generate(**inputs, generation_config=config)
                else:
                    out = self.model.generate(**inputs, generation_config=config)
                prefix_logits = self._prefix_logits(inputs, lengths, capture)
        except MODEL_ERRORS as exc:
            raise BackendError(f"{self.name}: batched generation failed: {exc}") from exc
        logits = torch.stack(out.logits, dim=1)
        eos = config.eos_token_id
        ends = {eos} if isinstance(eos, int) else set(eos or ())
        seconds = (time.perf_counter() - start) / len(requests)
        evidence = None if capture is None or not self._kept.capacity else capture.evidence

        results = []
        for row, (request, opts) in enumerate(zip(requests, options, strict=True)):
            ids = out.sequences[row, prompt_len:]
            stops = [k for k, token in enumerate(ids.tolist()) if token in ends]
            new_ids = ids[: stops[0] + 1] if stops else ids  # after its end a row is padding
            own_ids, own_logits = _with_prefix(
                prefixes[row],
                new_ids,
                None if prefix_logits is None else prefix_logits[row],
                logits[row, : new_ids.shape[0]],
            )
            seed = self._sampling(opts)[2]
            generation = self._generation(
                own_ids, own_logits, used[row], config, opts, seed, seconds, prefix=lengths[row]
            )
            alone = row_inputs(inputs, row, pads[row], len(requests), prefix=lengths[row])
            if evidence is not None and alone is not None:
                self._keep(request, generation, evidence[row], own_logits, alone, inputs, room=room)
            results.append(generation)
        return results

    def _generation_config(self, options: GenerationOptions) -> tuple[Any, int]:
        """The model's generation config for ``options`` (greedy unless sampled), and the sampling seed."""
        do_sample, temperature, seed = self._sampling(options)
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = options.max_new_tokens or self.max_new_tokens
        config.stop_strings = [s for s in options.stop if self._can_stop_on(s)] or None  # + tokenizer, at the call
        config.output_logits, config.return_dict_in_generate = True, True
        config.do_sample = do_sample
        config.temperature = temperature if do_sample else None
        if not do_sample:
            config.top_p, config.top_k = None, None
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        # Image placeholders in an answer would break re-scoring (features and tokens would not match).
        config.suppress_tokens = sorted({*(config.suppress_tokens or ()), *self._placeholder_ids})
        return config, seed

    def _generation(
        self,
        ids: torch.Tensor,
        logits: torch.Tensor,
        prompt_len: int,
        config: Any,
        options: GenerationOptions,
        seed: int,
        seconds: float,
        *,
        prefix: int = 0,
    ) -> Generation:
        """The ``Generation`` of answer tokens ``ids`` with their next-token ``logits``; the first ``prefix`` of them
        are an assistant prefix (teacher-forced: the end of the ``prompt_len`` prompt tokens), the rest generated."""
        logprobs = token_logprobs(logits, ids).clamp_max(0.0)
        text = self._decode(ids.tolist())
        generated = ids[prefix:].tolist()
        length = len(generated) >= config.max_new_tokens and not self._ended(generated, config)
        return Generation(
            text=text,
            answer=final_answer(text),
            model=self.name,
            provider="transformers",
            token_ids=tuple(ids.tolist()),
            token_logprobs=tuple(logprobs.tolist()),
            usage=Usage(input_tokens=prompt_len, output_tokens=len(generated)),
            seconds=seconds,
            finish_reason="length" if length else "stop",
            options=GenerationOptions(
                attempt=options.attempt,
                seed=seed,
                temperature=config.temperature if config.do_sample else 0.0,
                max_new_tokens=config.max_new_tokens,
                stop=options.stop,
                assistant_prefix=options.assistant_prefix,
            ),
        )

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one backend per loaded model: the cache lives as long anyway)
    def _can_stop_on(self, stop: str) -> bool:
        """Whether generation can stop on ``stop``: transformers refuses a stop string that no token of the
        vocabulary can spell, and such a string is never generated, so it is left out (the chat model still ends
        its text at any stop string)."""
        from transformers import StopStringCriteria

        try:
            StopStringCriteria(self.tokenizer, [stop])
        except ValueError:
            return False
        return True

    def _ended(self, ids: list[int], config: Any) -> bool:
        """Whether generation ended on its own at the last token: an end-of-sequence token, or a stop string."""
        eos = config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        if ids and ids[-1] in eos_ids:
            return True
        stop_strings = config.stop_strings or ()
        if not stop_strings:
            return False
        # Stopped by a stop string: the last token completed it (it may run on past its end).
        text, before = self._decode(ids), self._decode(ids[:-1])
        return any(s in text and s not in before for s in stop_strings)

    async def agenerate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """The async twin of :meth:`generate` (runs in a worker thread; calls are serialised)."""
        return await asyncio.to_thread(self.generate, request, options)


def _with_prefix(
    prefix: Sequence[int], new_ids: torch.Tensor, prefix_logits: torch.Tensor | None, logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """An answer's token ids and next-token logits, its assistant ``prefix`` (with the logits before each of its
    tokens) first: ``(tokens,)`` and ``(tokens, vocab)``."""
    if not prefix:
        return new_ids, logits
    assert prefix_logits is not None
    head = torch.tensor(list(prefix), dtype=new_ids.dtype, device=new_ids.device)
    return torch.cat([head, new_ids]), torch.cat([prefix_logits.to(logits.dtype), logits])
