#!/usr/bin/env bash
# Issue #13's checks on a GPU host (CI has none; make test never needs one), one script:
#   bench/gpu_scale.sh SETS_DIR OUTDIR
# after `source .gpu/assemble.sh` (../shared/gpu/README.md: onnxruntime's CUDA provider in
# parts). SETS_DIR holds mnist.tar.gz and cells.tar.gz (`python -m bench.gpu_sweep pack`) and
# mnist-raw.tar.gz (data/MNIST/raw, for validate). In order of what matters, each step's
# figures written to OUTDIR as it ends, so a run cut short still says what it measured:
# 1. CUDA parity of the shipped model (validate, TF32 off) and the classifier per provider;
# 2. the worker-count sweep on 60,000 MNIST PNGs, each provider, with CPU per role, and K
#    scans at once (does one client bend the curve?);
# 3. steady state: the same at 3x the images (start-up weighs less);
# 4. form cells.
set -uo pipefail
sets=${1:?usage: bench/gpu_scale.sh SETS_DIR OUTDIR}
out=${2:?usage: bench/gpu_scale.sh SETS_DIR OUTDIR}
py=${PYTHON:-python3}
mkdir -p "$out"
source "$(dirname "$0")/gpu_env.sh"
nproc; lscpu | grep -E "^Model name|^Thread|^Core|^Socket"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c 'import cv2, numpy, PIL, psutil, onnxruntime as o; print("cv2", cv2.__version__, "numpy",
  numpy.__version__, "onnxruntime", o.__version__, o.get_available_providers())'
tar xzf "$sets/mnist-raw.tar.gz"
timeout 120 "$py" -c 'from digitscan.cli import main; main()' validate models/digits.pt \
  models/digits.onnx --data data 2>&1 | tee "$out/validate.txt"
timeout 60 "$py" -m bench.provider_bench --model models/digits.onnx --data data 2>&1 | tee "$out/provider.txt"
"$py" -m bench.gpu_sweep run "$sets/mnist.tar.gz" --split 2,4 --out "$out/mnist.json"
"$py" -m bench.gpu_sweep run "$sets/mnist.tar.gz" --repeat 3 --cpu 16 --cuda 8,16 \
  --out "$out/mnist3.json"
"$py" -m bench.gpu_sweep run "$sets/cells.tar.gz" --cpu 2,8,16 --cuda 1,4,8,16 --out "$out/cells.json"
