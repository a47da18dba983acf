"""Benchmark for a lent GPU: the cost of decoupled confidence on a full-size Qwen2.5-VL-3B (random weights).

    # on a lent GPU machine (device tool `run`, timeout_s=600; about 2-3 minutes after the machine's start):
    PYTHONUNBUFFERED=1 python3 bench/gpu_confidence_cost.py --out $OUT/gpu_confidence_cost.json
    # then copy the returned file to bench/results/gpu_confidence_cost.json
    # anywhere, to prove the code path (tiny config of the same family, CPU, seconds):
    .venv/bin/python bench/gpu_confidence_cost.py --tiny

Issue 4, item 6: latency of generate + confidence against generate alone, at K = 1 (goal <= 1.15x on a GPU) and
K = 4, for batch 1 and batch 8, with a fixed answer length of 256 tokens.

The model is ``Qwen2_5_VLForConditionalGeneration`` built from the numbers of the public Qwen2.5-VL-3B-Instruct
``config.json`` written below (``QWEN2_5_VL_3B``; nothing is downloaded), randomly initialised on the device in
bfloat16. The script needs only torch and transformers (the GPU machines have no pydantic, so it does not import
``guardrail``); it reproduces what ``TransformersBackend`` and ``DecoupledEstimator`` do, batched over B requests
by hand (the backend serves one request per call):

- **inputs**: B requests, each a 448x448 random RGB image (32x32 patches of 14 px, merged 2x2 into 256 image
  tokens) and a 32-token text prompt, all of one length (no padding). Images are normalised and patchified on the
  host as Qwen2-VL's image processor does, then copied to the device.
- **generate** (the baseline): preprocessing, ``model.generate`` greedy with ``min_new_tokens = max_new_tokens =
  256`` (exactly 256 answer tokens per row), ``output_logits`` and ``return_dict_in_generate`` as the backend
  asks, image placeholders suppressed, then the answer tokens' log-probs from those logits (float32
  ``log_softmax`` + gather) and their copy to the host: what ``TransformersBackend.generate`` does.
- **confidence K**: K patch-blackened copies of every image (14 px patches, each black with probability 0.8,
  seeded; applied to the pixels before normalisation, as ``perturb_image`` does), preprocessing of the originals
  and the copies, **one** teacher-forced forward pass over all B x (1 + K) rows (prompt + answer[:-1],
  ``logits_to_keep = 256``), then per row, in float32, the answer tokens' log-probs and, against the original
  row, the clamped sampled-token KL (METHOD.md section 3), the surprisal, their means over the answer and
  s = log KL - log H, copied to the host: what ``DecoupledEstimator.estimate`` costs minus span parsing (which
  is microseconds).

Each round times one generate of the batch and, right after it, the confidence of that very generation at K = 1
and K = 4 (their order alternates between rounds); the device is synchronised at every clock reading. The ratio
at K is (generate + confidence K) / generate per round, and the median over rounds is reported: generation is
greedy and of fixed length, so generate + confidence is a generate followed by the confidence step, and pairing
both with the same generate keeps generation's own spread out of the ratio. A warm-up generate (8 tokens) and
one confidence step per K run first for every batch size, untimed.

Results go to bench/results/gpu_confidence_cost.json (``--out`` for another path), with the device name.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results" / "gpu_confidence_cost.json"
GOAL_K1 = 1.15
DRAW_COUNTS: tuple[int, ...] = (1, 4)

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

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # Qwen2-VL's image processor (OpenAI CLIP statistics)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
BLACKOUT_PROBABILITY = 0.8
LOG_RATIO_CLAMP = 20.0  # METHOD.md section 3: log p - log q clamped to [-20, 20], kl_t to [0, 10]
KL_CLAMP = 10.0
EPS = 1e-8


def build_model(spec: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    """A randomly initialised ``Qwen2_5_VLForConditionalGeneration`` of ``spec``, created on ``device``."""
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


def patchify(images: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """``(n, 3, H, W)`` images in 0..1 -> ``(n * H/patch * W/patch, 3 * temporal * patch**2)`` Qwen2-VL patches.

    Normalised with the CLIP statistics, each image repeated ``temporal`` times, rows ordered by 2x2 merge window
    (Qwen2-VL's image processor layout).
    """
    n, channels, height, width = images.shape
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    x = ((images - mean) / std).unsqueeze(1).expand(n, temporal, channels, height, width)
    gh, gw = height // patch, width // patch
    x = x.reshape(n, temporal, channels, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # n, gh/m, gw/m, m, m, C, T, P, P
    return x.reshape(n * gh * gw, channels * temporal * patch * patch).contiguous()


def blackout(images: torch.Tensor, patch: int, probability: float, seed: int) -> torch.Tensor:
    """``(n, 3, H, W)`` -> a copy with each ``patch`` x ``patch`` square black with ``probability`` (seeded)."""
    n, _, height, width = images.shape
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(n, 1, height // patch, width // patch, generator=generator) >= probability
    mask = keep.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return images * mask


class Workload:
    """B requests of one length on a device; generate and confidence steps as described in the module docstring."""

    def __init__(self, model: Any, spec: dict[str, Any], *, batch: int, image_px: int, prompt_tokens: int) -> None:
        self.model, self.batch = model, batch
        self.device = next(model.parameters()).device
        vision, tokens = spec["vision"], spec["tokens"]
        self.patch, self.merge = int(vision["patch_size"]), int(vision["spatial_merge_size"])
        self.temporal = int(vision["temporal_patch_size"])
        grid = image_px // self.patch
        image_tokens = grid * grid // self.merge**2
        generator = torch.Generator().manual_seed(1)
        self.images = torch.rand(batch, 3, image_px, image_px, generator=generator)
        text_vocab = int(tokens["bos_token_id"])  # ordinary tokens lie below the special ones
        text = torch.randint(0, text_vocab, (batch, prompt_tokens), generator=generator)
        half = prompt_tokens // 2
        image = torch.full((batch, image_tokens), tokens["image_token_id"])
        start = torch.full((batch, 1), tokens["vision_start_token_id"])
        end = torch.full((batch, 1), tokens["vision_end_token_id"])
        self.input_ids = torch.cat([text[:, :half], start, image, end, text[:, half:]], dim=1)
        self.grid_thw = torch.tensor([[1, grid, grid]] * batch)
        self.placeholders = [tokens[k] for k in ("image_token_id", "video_token_id")] + [
            tokens["vision_start_token_id"],
            tokens["vision_end_token_id"],
        ]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _inputs(self, images: torch.Tensor, rows: int) -> dict[str, torch.Tensor]:
        """Preprocess ``images`` (host) and move them with ``rows`` copies of the prompt ids to the device."""
        pixels = patchify(images, self.patch, self.merge, self.temporal)
        ids = self.input_ids.repeat(rows // self.batch, 1)
        dtype = next(self.model.parameters()).dtype
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": torch.ones_like(ids).to(self.device),
            "pixel_values": pixels.to(self.device, dtype),
            "image_grid_thw": self.grid_thw.repeat(rows // self.batch, 1).to(self.device),
        }

    def generate(self, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate exactly ``new_tokens`` per row; returns (answer ids ``(B, new)``, log-probs on the host)."""
        inputs = self._inputs(self.images, self.batch)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                min_new_tokens=new_tokens,
                max_new_tokens=new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                suppress_tokens=self.placeholders,
                top_p=None,
                top_k=None,
                temperature=None,
            )
            answer = out.sequences[:, inputs["input_ids"].shape[1] :]
            logits = torch.stack(out.logits, dim=1)[:, : answer.shape[1]]
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, answer.unsqueeze(-1)).squeeze(-1)
            logprobs = logprobs.clamp_max(0.0).cpu()
        return answer, logprobs

    def confidence(self, answer: torch.Tensor, draws: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """K = ``draws`` perturbed copies, one teacher-forced pass over B x (1 + K) rows, the reductions (host)."""
        copies = [blackout(self.images, self.patch, BLACKOUT_PROBABILITY, seed + k) for k in range(draws)]
        rows = self.batch * (1 + draws)
        inputs = self._inputs(torch.cat([self.images, *copies]), rows)
        n = answer.shape[1]
        forced = answer[:, :-1].repeat(1 + draws, 1)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], forced], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(forced)], dim=1)
        with torch.inference_mode():
            logits = self.model(**inputs, logits_to_keep=n, use_cache=False).logits  # (rows, n, vocab)
            targets = answer.repeat(1 + draws, 1).unsqueeze(-1)
            # Row by row in float32, as the backend reduces: one (n, vocab) float32 distribution at a time.
            logp_rows = [
                torch.log_softmax(logits[i].float(), dim=-1).gather(-1, targets[i]).squeeze(-1) for i in range(rows)
            ]
            logp_all = torch.stack(logp_rows).clamp_max(0.0).view(1 + draws, self.batch, n)
            logp, logq = logp_all[0], logp_all[1:]
            ratio = (logp - logq).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
            kl = (logp.exp() * ratio).clamp(0.0, KL_CLAMP).mean(-1).mean(0)  # (B,): mean over tokens, draws
            surprisal = (-logp).mean(-1)
            score = torch.log(kl + EPS) - torch.log(surprisal + EPS)
            return {"logprobs": logp.cpu(), "kl": kl.cpu(), "surprisal": surprisal.cpu(), "score": score.cpu()}

    def timed(self, call: Callable[[], Any]) -> tuple[Any, float]:
        """``call()`` and its wall seconds, the device synchronised before and after."""
        self._sync()
        start = time.perf_counter()
        result = call()
        self._sync()
        return result, time.perf_counter() - start


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
    parser.add_argument("--prompt-tokens", type=int, default=32, help="text tokens of the prompt (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per batch size (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.rounds < 1 or args.prompt_tokens < 2:
        parser.error("--rounds must be >= 1 and --prompt-tokens >= 2")
    args.batches = args.batches or ([1, 2] if args.tiny else [1, 8])
    args.answer_tokens = args.answer_tokens or (8 if args.tiny else 256)
    args.image_px = args.image_px or (56 if args.tiny else 448)
    if min(args.batches) < 1 or args.answer_tokens < 2 or args.image_px % 28:
        parser.error("batch sizes must be >= 1, --answer-tokens >= 2, --image-px a multiple of 28")
    return args


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, out: Path | None = None) -> dict[str, Any]:
    """Build, warm up and time every batch size (see the module docstring); returns the summary.

    With ``out``, the summary so far is written there after every batch size (``"complete": false`` until the
    last), so that a run stopped by a time limit still leaves its finished measurements.
    """
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if not isinstance(dtype, torch.dtype):
        raise SystemExit(f"--dtype must name a torch dtype such as bfloat16, got {args.dtype!r}")
    spec = TINY if args.tiny else QWEN2_5_VL_3B
    started = time.perf_counter()
    _log(f"building {'tiny' if args.tiny else 'Qwen2.5-VL-3B'} ({dtype}) on {device}")
    model = build_model(spec, device, dtype)
    parameters = sum(p.numel() for p in model.parameters())
    _log(f"built: {parameters / 1e9:.3f} B parameters in {time.perf_counter() - started:.1f} s")
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

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
        work = Workload(
            model,
            spec,
            batch=batch,
            image_px=args.image_px,
            prompt_tokens=args.prompt_tokens,
        )
        warm_answer, _ = work.generate(min(8, args.answer_tokens))
        for draws in DRAW_COUNTS:
            work.confidence(warm_answer, draws)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        generate_s: list[float] = []
        confidence_s: dict[int, list[float]] = {k: [] for k in DRAW_COUNTS}
        ratios: dict[int, list[float]] = {k: [] for k in DRAW_COUNTS}
        scores: list[float] = []
        drift = 0.0  # largest |teacher-forced - generated| log-prob of an answer token, original rows
        for round_index in range(args.rounds):
            (answer, logprobs), gen = work.timed(functools.partial(work.generate, args.answer_tokens))
            if answer.shape[1] != args.answer_tokens or not bool(torch.isfinite(logprobs).all()):
                raise RuntimeError(f"generation gave {answer.shape[1]} tokens or non-finite log-probs")
            generate_s.append(gen)
            order = DRAW_COUNTS if round_index % 2 == 0 else DRAW_COUNTS[::-1]
            for draws in order:
                scored, conf = work.timed(functools.partial(work.confidence, answer, draws, seed=round_index))
                confidence_s[draws].append(conf)
                ratios[draws].append((gen + conf) / gen)
                scores.extend(float(s) for s in scored["score"])
                drift = max(drift, float((scored["logprobs"] - logprobs).abs().max()))
            _log(
                f"batch {batch} round {round_index + 1}/{args.rounds}: generate {gen:.3f} s, "
                + ", ".join(f"K={k} +{confidence_s[k][-1]:.3f} s" for k in DRAW_COUNTS)
            )
        entry: dict[str, Any] = {
            "batch": batch,
            "rows_scored": {f"K={k}": batch * (1 + k) for k in DRAW_COUNTS},
            "sequence_tokens": int(work.input_ids.shape[1]) + args.answer_tokens,
            "generate_median_s": _median(generate_s),
            "generate_s_per_token": _median(generate_s) / args.answer_tokens,
            "confidence_median_s": {f"K={k}": _median(v) for k, v in confidence_s.items()},
            "ratio": {f"K={k}": _median(v) for k, v in ratios.items()},
            "ratio_max": {f"K={k}": max(v) for k, v in ratios.items()},
            "generate_s": generate_s,
            "confidence_s": {f"K={k}": v for k, v in confidence_s.items()},
            "scores_finite": all(math.isfinite(s) for s in scores),
            "rescoring_logprob_max_abs_diff": drift,
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
    device: torch.device,
    device_name: str,
    dtype: torch.dtype,
    started: float,
    complete: bool,
) -> dict[str, Any]:
    import transformers

    goal_met = bool(results) and all(entry["ratio"]["K=1"] <= GOAL_K1 for entry in results.values())
    return {
        "benchmark": "generate + decoupled confidence vs generate alone, Qwen2.5-VL family, random weights",
        "command": " ".join(["bench/gpu_confidence_cost.py", *args.argv]),
        "model": "tiny Qwen2.5-VL config" if args.tiny else "Qwen2.5-VL-3B-Instruct config (random init)",
        "model_parameters": parameters,
        "device": device.type,
        "device_name": device_name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "answer_tokens": args.answer_tokens,
        "image_px": args.image_px,
        "image_tokens": (args.image_px // 14) ** 2 // 4,
        "prompt_text_tokens": args.prompt_tokens,
        "rounds": args.rounds,
        "results": results,
        "goal_k1": GOAL_K1,
        "goal_met": goal_met,
        "complete": complete,
        "wall_s": time.perf_counter() - started,
    }


def report(summary: dict[str, Any], out: Path) -> None:
    """Print the summary as a rich table (or plain lines without rich)."""
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
                )
            )
    header = ("batch", "draws", "generate s", "confidence s", "ratio")
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
    out = Path(args.out)
    summary = run(args, out)
    _write(out, summary)
    report(summary, out)
    return summary


if __name__ == "__main__":
    main()
