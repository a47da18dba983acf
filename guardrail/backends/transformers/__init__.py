"""A white-box backend for any ``transformers`` vision-language model (``AutoModelForImageTextToText``).

Besides ``generate`` it offers what the decoupled estimator needs (``guardrail.confidence.ScoringBackend``):
``score``, teacher-forced re-scoring of an answer under the original images and image variants in one batched
forward pass; ``reference``, row 0 of that pass kept from generation itself so that ``score(..., reference=...)``
runs only the variants; ``model_images``, the request's images at the model's input resolution (where
perturbations act); and ``token_offsets``, each generated token's character range in the response text.

Tested on tiny random LLaVA, Idefics3/SmolVLM, Qwen2-VL and Qwen2.5-VL models. Library errors are translated to
``BackendError`` and image problems to ``ImageError``.

A package, one private module per job, because ``TransformersBackend`` does four jobs over one loaded model, and
each is a few hundred lines that a reader wants to find and read alone:

- ``_encoding``: requests into prompts and model inputs, answer tokens into text, the prompt-length check;
- ``_references``: the prefill hook that measures the familiarity evidence during generation, and the kept
  references (row 0 of each recent answer);
- ``_generation``: ``generate``, ``agenerate``, ``generate_batch``;
- ``_scoring``: ``score``, ``score_batch`` (teacher forcing, with or without a kept reference);
- ``_state`` (what the four share), ``_loading`` (the folder's model and processor classes, device and dtype) and
  ``_backend`` (``TransformersBackend``, which joins the jobs).

The jobs are classes that ``TransformersBackend`` inherits rather than objects it holds, as transformers' own
models inherit ``GenerationMixin``: they share every piece of state (model, processor, device, lock) and call one
another at a fine grain (scoring and the prefill hook both find the question's positions and measure the same
evidence), so one object keeps one lock and one set of caches. This package is the only import path:
``from guardrail.backends.transformers import TransformersBackend`` as before the split.

torch and transformers come with the ``local`` extra (``pip install 'lvlm-guardrail[local]'``); without it,
importing this package says so.
"""

from __future__ import annotations

from ..._extras import needs

with needs("local", "TransformersBackend (a model in process)"):
    from ._backend import TransformersBackend
    from ._loading import resolve_device, resolve_dtype

__all__ = ["TransformersBackend", "resolve_device", "resolve_dtype"]
