#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU (CI has none, so make test never needs one).
# Usage: bench/gpu_check.sh OUTDIR   with MNIST under data/ and a python3 that has torch,
# onnx, onnxscript, onnxruntime, matplotlib, tqdm, click, pytest (no install of digitscan needed).
set -uo pipefail
out=${1:?usage: bench/gpu_check.sh OUTDIR}
py=${PYTHON:-python3}
work=$(mktemp -d)
mkdir -p "$out"
# No install here (no network on a GPU host): lay out the digitscan namespace as pip would
# (worker/, trainer/, export/ as digitscan.worker, ...) with symlinks into this checkout.
mkdir -p "$work/pkg/digitscan"
ln -s "$PWD"/digitscan/*.py "$work/pkg/digitscan/"
for stage in worker trainer export; do ln -s "$PWD/$stage" "$work/pkg/digitscan/$stage"; done
export PYTHONPATH=$work/pkg:$PWD PYTHONUNBUFFERED=1
ds() { "$py" -c 'from digitscan.cli import main; main()' "$@"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c 'import torch, onnxruntime as o; print("torch", torch.__version__, "cuda:",
  torch.cuda.is_available(), "| onnxruntime", o.__version__, o.get_available_providers())'
# 1. The training and export tests, with --device auto picking the GPU.
"$py" -m pytest -q -p no:cacheprovider tests/test_train.py tests/test_models.py \
  tests/test_augment.py tests/test_export.py 2>&1 | tail -n 15
# 2. The shipped recipe and the seed's recipe on CUDA; 3. export the CUDA-trained CNN
# (parity against onnxruntime on the CPU); 4. the worker's classifier on each provider.
ds train --device cuda --out "$work/cnn" --no-progress
ds train --arch mlp --device cuda --out "$work/mlp" --no-progress
ds export "$work/cnn/checkpoint.pt" --out "$work/cnn.onnx"
"$py" -m bench.provider_bench --model "$work/cnn.onnx"
cp "$work/cnn/metrics.json" "$out/cnn_metrics.json"
cp "$work/mlp/metrics.json" "$out/mlp_metrics.json"
cp "$work/cnn.json" "$out/cnn_card.json"
