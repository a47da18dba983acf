#!/usr/bin/env bash
# Train Qwen2.5-VL-3B to verbalize calibrated visual and reasoning confidence (METHOD.md section 8), then fit
# the guard's calibration on the trained model. Needs: pip install 'lvlm-guardrail[train]' vllm deepspeed,
# the model weights (hub or local), and data/train.jsonl + data/calibration.jsonl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
gpus="${GPUS:-$(nvidia-smi -L | wc -l)}"
out="${OUT:-runs/qwen2_5_vl_3b-vlcal}"

accelerate launch --config_file "$here/accelerate_multi_gpu.yaml" --num_processes "$gpus" \
  "$(command -v guardrail)" train grpo --config "$here/qwen2_5_vl_3b.yaml" --out "$out" "$@"

# The LoRA adapter is saved in $out; merge it so the guard loads an ordinary model folder.
python - "$out" "${BASE_MODEL:-Qwen/Qwen2.5-VL-3B-Instruct}" <<'PY'
import sys
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor
out, base = sys.argv[1], sys.argv[2]
model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base, dtype="auto"), out)
model.merge_and_unload().save_pretrained(out + "-merged")
AutoProcessor.from_pretrained(out).save_pretrained(out + "-merged")
PY

# The guard then measures its probe and reads the verbalized scores; calibration fits both.
guardrail calibrate --model "$out-merged" --data data/calibration.jsonl --out "$out-merged/guardrail_calibration.json"
