#!/usr/bin/env bash
# The GPU check: one prepared script, at most 8 minutes, for a machine with a CUDA GPU and Python with torch
# preinstalled. It installs what else it needs from the package index (the project and its ROS wheels,
# onnx, onnxruntime-gpu, tensorrt), then runs bench/gpu_check.py, which writes ONE results file:
#   node      perception_node on CUDA, fp16, mit_b0 + 768 head at 1024 x 1024: end to end / forward
#   training  train_teacher and train_student steps/s with AMP (bf16)
#   ddp       a one-GPU torchrun DDP step loop with nccl
#   tensorrt  the tensorrt backend's parity with torch fp16 and its speed
# Parts that cannot run say why (no CUDA, an install that failed, the time budget) and the rest go on.
# On a machine without CUDA nothing is installed and every part is skipped, saying so.
#
#   bash bench/gpu_check.sh [RESULTS_FILE]         # default runs/gpu_check/results.md
#   PYTHON=python3.12 bash bench/gpu_check.sh      # the interpreter that has torch
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${1:-runs/gpu_check/results.md}
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA found; installing the project, onnx, onnxruntime-gpu, tensorrt (at most 150 s)"
    timeout 150 "$PYTHON" -m pip install --quiet -e ".[ros]" onnx onnxruntime-gpu tensorrt \
        || echo "gpu_check: some installs failed; the parts that need them will say so"
    TRT_LIBS=$("$PYTHON" -c "import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))" 2>/dev/null)
    if [ -n "$TRT_LIBS" ]; then
        export LD_LIBRARY_PATH="$TRT_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
else
    echo "gpu_check: no CUDA device: every GPU part is skipped"
fi
ELAPSED=$(( $(date +%s) - START ))
exec "$PYTHON" bench/gpu_check.py --out "$RESULTS" --budget-s $(( 460 - ELAPSED )) "${@:2}"
