"""Benchmark for a lent GPU: the library's decoupled confidence on a full-size Qwen2.5-VL-3B (random weights).

It times the product itself: ``TransformersBackend.generate`` and ``DecoupledEstimator.estimate`` (issue 17, item
3), on ``Qwen2_5_VLForConditionalGeneration`` built from the numbers of the public Qwen2.5-VL-3B-Instruct
``config.json`` (``QWEN2_5_VL_3B`` below; nothing is downloaded), randomly initialised on the device in bfloat16.

Set-up, once, on a machine that reaches PyPI (the GPU machines have torch and transformers but not pydantic nor
opentelemetry, which the library imports): fetch those wheels, at the versions the project is tested with, into a
git-ignored folder::

    echo /.whl/ >> .git/info/exclude
    .venv/bin/python bench/gpu_confidence_cost.py --fetch-wheels .whl

Run, on the GPU machine, from the repository root (device tool ``run`` with ``carry: [".whl"]``, ``timeout_s:
600``; about 6-8 minutes after the machine's start)::

    PYTHONUNBUFFERED=1 python3 bench/gpu_confidence_cost.py --wheels .whl --commit HASH \
        --out $OUT/gpu_confidence_cost.json

then copy the returned file to bench/results/gpu_confidence_cost.json (``HASH``: ``git rev-parse HEAD`` here; the
copy sent there has no git history). Where the library is installed (``pip install -e .``), ``python
bench/gpu_confidence_cost.py`` alone runs the same. The code path on the CPU, in seconds (tiny config of the same
family; tests/bench/test_confidence_cost.py runs it)::

    .venv/bin/python bench/gpu_confidence_cost.py --tiny --out /tmp/gpu_confidence_cost.json

What is measured, for batch sizes 1 and 8 (B requests; the backend serves one request per ``generate`` call, so a
batch is B calls one after another, until a batched path exists):

- **inputs**: B requests, each a 448x448 random RGB image (32x32 patches of 14 px, merged 2x2 into 256 image
  tokens) and a question of 32 random words; the processor is Qwen2-VL's image processor with a word-level
  tokenizer over the model's whole vocabulary (``processor_for``), through the library's ``TokenExpandingProcessor``.
- **generate**: ``backend.generate(request)`` for each request, greedy, exactly 256 answer tokens
  (``min_new_tokens = max_new_tokens = 256``). As in the product, generation keeps row 0 of the scoring pass.
- **confidence K** (K = 1, 4): ``DecoupledEstimator(draws=K).estimate(backend, request, generation)`` on each of
  those generations: span parsing, token offsets, K patch-blackened copies, one teacher-forced forward pass over the
  K copies (row 0 from what generation kept), the reductions and the signals.
- **generate, nothing kept**: ``generate`` on a backend over the same model with ``keep_references=0``
  (``model.generate`` alone), to show what keeping row 0 costs generation.

Each round times, request after request, the generate and right after it the confidence of that very generation
at K = 1 and K = 4 (their order alternating between rounds), then the batch's ``generate, nothing kept``; the
device is synchronised at every clock reading. The ratio at K is (generate + confidence K) / generate summed over
the batch, per round; the median over rounds is reported, and likewise against ``generate, nothing kept``. A
warm-up (one generate of 8 tokens and one confidence per K) runs first for every batch size, untimed. Once per
batch size, untimed, the first request's signals are also measured with a plain scoring pass (row 0 re-scored
with the copies, as without a kept reference) and the largest differences are recorded (bfloat16 on the GPU).

Goal (issue 17): K = 1 <= 1.1x generate. Results go to bench/results/gpu_confidence_cost.json (``--out`` for
another path) with the device name, the commit and the exact command; after every batch size the file is written
with ``"complete": false`` so that a run stopped by the time limit keeps what it finished.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "gpu_confidence_cost.json"
GOAL_K1 = 1.1
DRAW_COUNTS: tuple[int, ...] = (1, 4)
WHEELS = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-semantic-conventions",
)
"""What the library imports that the GPU machines lack (``--fetch-wheels``): pydantic and its needs, opentelemetry."""

# Qwen/Qwen2.5-VL-3B-Instruct config.json (public); the vision numbers it leaves out are the Qwen2.5-VL vision
# defaults (depth 32, intermediate 3420, 16 heads, window 112, full attention in blocks 7/15/23/31).
QWEN2_5_VL_3B: dict[str, Any] = {
    "text": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "mrope_section": [16, 24, 24],
        "tie_word_embeddings": True,
    },
    "vision": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "hidden_act": "silu",
        "in_channels": 3,
    },
    "tokens": {
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "image_token_id": 151655,
        "video_token_id": 151656,
    },
}

# A tiny config of the same family (CPU, seconds): 2 layers, 300 tokens, the same patch geometry.
TINY: dict[str, Any] = {
    "text": {
        "vocab_size": 300,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "mrope_section": [1, 1, 2],
        "tie_word_embeddings": True,
    },
    "vision": {
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
        "tokens_per_second": 2,
        "hidden_act": "silu",
        "in_channels": 3,
    },
    "tokens": {
        "bos_token_id": 290,
        "eos_token_id": 291,
        "vision_start_token_id": 292,
        "vision_end_token_id": 293,
        "image_token_id": 294,
        "video_token_id": 295,
    },
}

SPECIAL_NAMES = {
    "bos_token_id": "<|endoftext|>",
    "eos_token_id": "<|im_end|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}
CHAT_TEMPLATE = (
    "{% for message in messages %}{% for block in message['content'] %}"
    "{% if block['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ block['text'] }}{% endif %}{% endfor %}{% endfor %}"
)


def build_model(spec: dict[str, Any], device: Any, dtype: Any) -> Any:
    """A randomly initialised ``Qwen2_5_VLForConditionalGeneration`` of ``spec``, created on ``device``."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(spec["text"])
    rope = {"rope_type": "default", "mrope_section": text.pop("mrope_section"), "rope_theta": text.pop("rope_theta")}
    tokens = spec["tokens"]
    config = Qwen2_5_VLConfig(
        text_config={
            **text,
            "rope_parameters": rope,
            "bos_token_id": tokens["bos_token_id"],
            "eos_token_id": tokens["eos_token_id"],
            "pad_token_id": tokens["bos_token_id"],
        },
        vision_config=dict(spec["vision"]),
        tie_word_embeddings=text["tie_word_embeddings"],
        **tokens,
    )
    model_class: Any = Qwen2_5_VLForConditionalGeneration  # untyped in transformers' stubs
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class._from_config(config, dtype=dtype)
    model = model.to(device, dtype)  # a no-op where the weights were created in place
    model.eval()
    model.generation_config.eos_token_id = tokens["eos_token_id"]
    model.generation_config.pad_token_id = tokens["bos_token_id"]
    return model


def processor_for(spec: dict[str, Any]) -> Any:
    """A processor for ``spec``'s model: Qwen2-VL's image processor (448 x 448 stays 448 x 448) and a word-level
    tokenizer over the whole vocabulary (token i is the word ``w{i}``, the special tokens at their ids), so that
    every generated id decodes and every prompt word is one token."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    from guardrail.backends._vision_inputs import TokenExpandingProcessor

    tokens = spec["tokens"]
    special = {SPECIAL_NAMES[key]: int(tokens[key]) for key in SPECIAL_NAMES}
    taken = set(special.values())
    vocab = {f"w{i}": i for i in range(int(spec["text"]["vocab_size"])) if i not in taken} | special
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.add_special_tokens(list(special))
    tokenizer = transformers.PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=word_level, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="w0"
    )
    images_class = getattr(transformers, "Qwen2VLImageProcessor", None) or transformers.Qwen2VLImageProcessorPil
    vision = spec["vision"]
    image_processor = images_class(
        size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280},
        patch_size=vision["patch_size"],
        merge_size=vision["spatial_merge_size"],
        temporal_patch_size=vision["temporal_patch_size"],
    )
    return TokenExpandingProcessor(tokenizer, image_processor, chat_template=CHAT_TEMPLATE)


def requests_for(spec: dict[str, Any], batch: int, *, image_px: int, words: int, seed: int) -> list[Any]:
    """``batch`` requests: a random ``image_px`` square RGB image and a question of ``words`` random words each."""
    import numpy as np
    from PIL import Image

    from guardrail import Request

    rng = np.random.default_rng(seed)
    ordinary = int(spec["tokens"]["bos_token_id"])  # ordinary words lie below the special tokens
    out = []
    for _ in range(batch):
        pixels = rng.integers(0, 256, size=(image_px, image_px, 3), dtype=np.uint8)
        question = " ".join(f"w{i}" for i in rng.integers(1, ordinary, size=words))
        out.append(Request.from_question(question, [Image.fromarray(pixels)]))
    return out


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config of the same family (CPU code-path check)")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 8; tiny 1 2)")
    parser.add_argument("--answer-tokens", type=int, default=None, help="answer length (default 256; tiny 8)")
    parser.add_argument("--image-px", type=int, default=None, help="image side in px (default 448; tiny 56)")
    parser.add_argument("--prompt-words", type=int, default=32, help="question words = tokens (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per batch size (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    parser.add_argument("--commit", default=None, help="commit to record where the copy has no git history")
    parser.add_argument("--wheels", type=Path, default=None, help="install these wheels (a folder) first, then run")
    parser.add_argument("--fetch-wheels", type=Path, default=None, help="download the wheels the GPU lacks; exit")
    parser.add_argument("--python-version", default="3.12", help="of the GPU machine, for --fetch-wheels")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.rounds < 1 or args.prompt_words < 1:
        parser.error("--rounds and --prompt-words must be >= 1")
    args.batches = args.batches or ([1, 2] if args.tiny else [1, 8])
    args.answer_tokens = args.answer_tokens or (8 if args.tiny else 256)
    args.image_px = args.image_px or (56 if args.tiny else 448)
    if min(args.batches) < 1 or args.answer_tokens < 2 or args.image_px % 28:
        parser.error("batch sizes must be >= 1, --answer-tokens >= 2, --image-px a multiple of 28")
    return args


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fetch_wheels(folder: Path, python_version: str) -> None:
    """Download (from PyPI, no dependencies) the wheels of ``WHEELS`` at this environment's versions."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "-d", str(folder)]
    command += [item for platform_tag in platforms for item in ("--platform", platform_tag)]
    subprocess.run([*command, *pins], check=True)
    print(f"{len(pins)} wheels in {folder}: {', '.join(pins)}")


def install_wheels(folder: Path) -> None:
    """Install the wheels in ``folder`` into a temporary directory put first on ``sys.path`` (nothing else is
    touched)."""
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"no wheels in {folder} (run --fetch-wheels {folder} where PyPI is reachable)")
    target = tempfile.mkdtemp(prefix="guardrail-wheels-")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    subprocess.run([*command, "--target", target, *wheels], check=True)
    sys.path.insert(0, target)


def _generate_all(backend: Any, requests: Sequence[Any]) -> list[Any]:
    return [backend.generate(request) for request in requests]


def _synchronised(device: Any) -> Callable[[Callable[[], Any]], tuple[Any, float]]:
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(call: Callable[[], Any]) -> tuple[Any, float]:
        sync()
        start = time.perf_counter()
        result = call()
        sync()
        return result, time.perf_counter() - start

    return timed


def _plain_scoring_drift(backend: Any, estimator: Any, request: Any, generation: Any) -> dict[str, float]:
    """Largest differences between row 0 kept from generation and row 0 re-scored teacher-forced, and between the
    signals computed with each (the second as a plain ``ScoringBackend`` gets them)."""
    reference = backend.reference(request, generation)
    if reference is None:
        raise RuntimeError("generation kept no reference: the benchmark would not measure the product's path")
    row0 = backend.score(request, generation.token_ids).token_logprobs[0] - reference.scores.token_logprobs[0]
    kept = estimator.estimate(backend, request, generation)
    plain = estimator.estimate(_PlainScoring(backend), request, generation)
    common = set(kept.features) & set(plain.features)
    return {
        "row0_logprob_max_abs_diff": float(row0.abs().max()),
        "feature_max_abs_diff": max(abs(kept.features[k] - plain.features[k]) for k in common),
        "visual_abs_diff": abs((kept.visual or 0.0) - (plain.visual or 0.0)),
    }


class _PlainScoring:
    """A backend's scoring as a plain ``ScoringBackend``: no ``reference``, so row 0 is scored with the copies."""

    def __init__(self, backend: Any) -> None:
        self.inner, self.name, self.patch_size = backend, backend.name, backend.patch_size

    def generate(self, request: Any, options: Any) -> Any:
        return self.inner.generate(request, options)

    def model_images(self, request: Any) -> Any:
        return self.inner.model_images(request)

    def token_offsets(self, token_ids: Any) -> Any:
        return self.inner.token_offsets(token_ids)

    def score(self, request: Any, token_ids: Any, variants: Any = (), *, distributions: bool = False) -> Any:
        return self.inner.score(request, token_ids, variants, distributions=distributions)


def run(args: argparse.Namespace, out: Path | None = None) -> dict[str, Any]:
    """Build, warm up and time every batch size (see the module docstring); returns the summary.

    With ``out``, the summary so far is written there after every batch size (``"complete": false`` until the
    last), so that a run stopped by a time limit still leaves its finished measurements.
    """
    import torch

    from guardrail.backends.transformers import TransformersBackend
    from guardrail.confidence import DecoupledEstimator
    from guardrail.types import GenerationOptions

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.tiny:
        raise SystemExit("the full-size model needs a GPU; --tiny runs the code path on the CPU")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if not isinstance(dtype, torch.dtype):
        raise SystemExit(f"--dtype must name a torch dtype such as bfloat16, got {args.dtype!r}")
    spec = TINY if args.tiny else QWEN2_5_VL_3B
    started = time.perf_counter()
    _log(f"building {'tiny' if args.tiny else 'Qwen2.5-VL-3B'} ({dtype}) on {device}")
    model = build_model(spec, device, dtype)
    model.generation_config.min_new_tokens = args.answer_tokens  # exactly this many answer tokens
    processor = processor_for(spec)
    name = "qwen2.5-vl-3b-random" if not args.tiny else "qwen2.5-vl-tiny-random"
    backend = TransformersBackend(
        model, processor, name=name, device=device, dtype=dtype, max_new_tokens=args.answer_tokens
    )
    alone = TransformersBackend(
        model, processor, name=name, device=device, dtype=dtype, max_new_tokens=args.answer_tokens, keep_references=0
    )
    estimators = {k: DecoupledEstimator(draws=k) for k in DRAW_COUNTS}
    parameters = sum(p.numel() for p in model.parameters())
    _log(f"built: {parameters / 1e9:.3f} B parameters in {time.perf_counter() - started:.1f} s")
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    timed = _synchronised(device)
    results: dict[str, Any] = {}

    def summary(*, complete: bool) -> dict[str, Any]:
        return _summary_of(
            args,
            results,
            parameters=parameters,
            device=device,
            device_name=device_name,
            dtype=dtype,
            started=started,
            complete=complete,
        )

    for batch in args.batches:
        requests = requests_for(spec, batch, image_px=args.image_px, words=args.prompt_words, seed=batch)
        warm = backend.generate(requests[0], GenerationOptions(max_new_tokens=8))
        for estimator in estimators.values():
            estimator.estimate(backend, requests[0], warm)
        alone.generate(requests[0], GenerationOptions(max_new_tokens=8))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        generate_s: list[float] = []
        alone_s: list[float] = []
        confidence_s: dict[int, list[float]] = {k: [] for k in DRAW_COUNTS}
        rows: dict[int, list[int]] = {k: [] for k in DRAW_COUNTS}
        visual: list[float] = []
        first: Any = None  # the last round's first generation (kept alive: its reference goes with it)
        for round_index in range(args.rounds):
            gen_total = 0.0
            conf_total = dict.fromkeys(DRAW_COUNTS, 0.0)
            order = DRAW_COUNTS if round_index % 2 == 0 else DRAW_COUNTS[::-1]
            for request in requests:
                generation, seconds = timed(functools.partial(backend.generate, request))
                if len(generation.token_ids) != args.answer_tokens:
                    raise RuntimeError(f"generation gave {len(generation.token_ids)} tokens, not {args.answer_tokens}")
                gen_total += seconds
                first = generation if request is requests[0] else first
                for k in order:
                    estimator = estimators[k]
                    signals, seconds = timed(functools.partial(estimator.estimate, backend, request, generation))
                    conf_total[k] += seconds
                    rows[k].append(k + (backend.reference(request, generation) is None))
                    visual.append(math.nan if signals.visual is None else signals.visual)
            _, alone_total = timed(functools.partial(_generate_all, alone, requests))
            generate_s.append(gen_total)
            alone_s.append(alone_total)
            for k in DRAW_COUNTS:
                confidence_s[k].append(conf_total[k])
            _log(
                f"batch {batch} round {round_index + 1}/{args.rounds}: generate {gen_total:.3f} s "
                f"(nothing kept {alone_total:.3f} s), "
                + ", ".join(f"K={k} +{conf_total[k]:.3f} s" for k in DRAW_COUNTS)
            )
        drift = _plain_scoring_drift(backend, estimators[1], requests[0], first)
        entry: dict[str, Any] = {
            "batch": batch,
            "generate_calls_per_round": batch,
            "rows_scored_per_request": {f"K={k}": _median([float(r) for r in rows[k]]) for k in DRAW_COUNTS},
            "generate_median_s": _median(generate_s),
            "generate_nothing_kept_median_s": _median(alone_s),
            "generate_s_per_token": _median(generate_s) / (args.answer_tokens * batch),
            "confidence_median_s": {f"K={k}": _median(v) for k, v in confidence_s.items()},
            "ratio": {
                f"K={k}": _median([(g + c) / g for g, c in zip(generate_s, v, strict=True)])
                for k, v in confidence_s.items()
            },
            "ratio_vs_generate_nothing_kept": {
                "generate": _median([g / a for g, a in zip(generate_s, alone_s, strict=True)]),
                **{
                    f"K={k}": _median([(g + c) / a for g, c, a in zip(generate_s, v, alone_s, strict=True)])
                    for k, v in confidence_s.items()
                },
            },
            "generate_s": generate_s,
            "generate_nothing_kept_s": alone_s,
            "confidence_s": {f"K={k}": v for k, v in confidence_s.items()},
            "visual_finite": all(math.isfinite(v) for v in visual),
            "kept_vs_plain_scoring": drift,
        }
        if device.type == "cuda":
            entry["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        results[f"batch {batch}"] = entry
        if out is not None:
            _write(out, summary(complete=len(results) == len(args.batches)))
    return summary(complete=True)


def _write(out: Path, summary: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


def _summary_of(
    args: argparse.Namespace,
    results: dict[str, Any],
    *,
    parameters: int,
    device: Any,
    device_name: str,
    dtype: Any,
    started: float,
    complete: bool,
) -> dict[str, Any]:
    import importlib.util

    import torch
    import transformers

    spec = importlib.util.spec_from_file_location("_bench_provenance", ROOT / "bench" / "_provenance.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    origin = module.provenance(__file__, args.argv)
    if origin["commit"] is None and args.commit:
        origin["commit"], origin["commit_from"] = args.commit, "--commit"
    goal_met = bool(results) and all(entry["ratio"]["K=1"] <= GOAL_K1 for entry in results.values())
    return {
        "benchmark": "TransformersBackend.generate + DecoupledEstimator.estimate vs generate, Qwen2.5-VL, random init",
        **origin,
        "model": "tiny Qwen2.5-VL config" if args.tiny else "Qwen2.5-VL-3B-Instruct config (random init)",
        "model_parameters": parameters,
        "device": device.type,
        "device_name": device_name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "answer_tokens": args.answer_tokens,
        "image_px": args.image_px,
        "image_tokens": (args.image_px // 14) ** 2 // 4,
        "prompt_words": args.prompt_words,
        "rounds": args.rounds,
        "results": results,
        "goal_k1": GOAL_K1,
        "goal_met": goal_met,
        "complete": complete,
        "wall_s": time.perf_counter() - started,
    }


def report(summary: dict[str, Any], out: Path) -> None:
    """Print the summary as a table (rich where installed, else plain lines)."""
    rows = []
    for label, entry in summary["results"].items():
        for k in DRAW_COUNTS:
            key = f"K={k}"
            rows.append(
                (
                    label,
                    key,
                    f"{entry['generate_median_s']:.3f}",
                    f"{entry['confidence_median_s'][key]:.3f}",
                    f"{entry['ratio'][key]:.3f}",
                    f"{entry['ratio_vs_generate_nothing_kept'][key]:.3f}",
                )
            )
    header = ("batch", "draws", "generate s", "confidence s", "ratio", "vs model.generate")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(" | ".join(header))
        for row in rows:
            print(" | ".join(row))
    else:
        table = Table(title=f"Confidence cost, {summary['model']}, {summary['device_name']}, medians")
        for column in header:
            table.add_column(column, justify="left" if column in ("batch", "draws") else "right")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    verdict = "met" if summary["goal_met"] else "MISSED"
    print(
        f"goal K=1 <= {summary['goal_k1']}x: {verdict}; {summary['answer_tokens']} answer tokens; "
        f"total {summary['wall_s']:.0f} s. Written to {out}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON, print the table; returns the summary."""
    args = parse_args(argv)
    if args.fetch_wheels is not None:
        fetch_wheels(args.fetch_wheels, args.python_version)
        return {}
    if args.wheels is not None:
        install_wheels(args.wheels)
    if str(ROOT) not in sys.path:  # the library of this checkout, installed or not
        sys.path.insert(0, str(ROOT))
    out = Path(args.out)
    summary = run(args, out)
    _write(out, summary)
    report(summary, out)
    return summary


if __name__ == "__main__":
    main()
