#!/usr/bin/env bash
# The checks for a GPU host (CI has none, so make test never needs one). Run after
# `source .gpu/assemble.sh` (../shared/gpu/README.md: onnxruntime's CUDA provider brought
# over in parts) with the training bundle from `python -m bench.gpu_train pack`:
#   bench/gpu_check.sh BUNDLE OUTDIR [EPOCHS_SCALE]
# 1. MNIST from the bundle; 2. the recipe search (bench/gpu_train.py) in the background;
# 3. meanwhile the shipped model on onnxruntime's CUDA provider: parity with the checkpoint
# (validate, TF32 off) and the classifier per provider (bench/provider_bench.py).
set -uo pipefail
bundle=${1:?usage: bench/gpu_check.sh BUNDLE OUTDIR [EPOCHS_SCALE]}
out=${2:?usage: bench/gpu_check.sh BUNDLE OUTDIR [EPOCHS_SCALE]}
scale=${3:-1}
py=${PYTHON:-python3}
mkdir -p "$out"
source "$(dirname "$0")/gpu_env.sh"
ds() { "$py" -c 'from digitscan.cli import main; main()' "$@"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c 'import torch, onnxruntime as o; print("torch", torch.__version__, "cuda:",
  torch.cuda.is_available(), "| onnxruntime", o.__version__, o.get_available_providers())'
"$py" -m bench.gpu_train idx "$bundle" --root data
"$py" -m bench.gpu_train run "$bundle" --out "$out/train" --epochs-scale "$scale" \
  > "$out/train.log" 2>&1 &
trainer=$!
ds validate models/digits.pt models/digits.onnx --data data
"$py" -m bench.provider_bench --model models/digits.onnx --data data
wait "$trainer"
cat "$out/train/log.txt"
