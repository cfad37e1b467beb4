#!/usr/bin/env bash
# Issue #13's checks on a GPU host (CI has none; make test never needs one), one script:
#   [STEPS="parity probe choices sweep cells"] bench/gpu_scale.sh SETS_DIR OUTDIR
# after `source .gpu/assemble.sh` (../shared/gpu/README.md: onnxruntime's CUDA provider in
# parts). SETS_DIR holds mnist.tar.gz and cells.tar.gz (`python -m bench.gpu_sweep pack`) and
# mnist-raw.tar.gz (data/MNIST/raw, for validate). Each step writes its figures to OUTDIR as
# it ends, so a run cut short still says what it measured:
#   (always) bytecode for the carried packages and the checkout, as pip writes it at install:
#            ../shared/gpu/assemble.sh installs with --no-compile, and where the host sets
#            PYTHONDONTWRITEBYTECODE every process would compile Celery, kombu, redis-py and
#            digitscan from source again (on a 2-core machine +0.32 s of CPU for the imports of
#            scan's client and its Celery parent each, 0.22 -> 0.54 s; the H100 hosts' probe
#            had `import digitscan.worker.client` at 0.87 s of CPU where it takes ~0.2 here)
#   build    the cleanup's C part (worker/_cleanup.c) for the host's Python, where it has a C
#            compiler and Python's headers (gpu_env.sh installs nothing; without it the
#            numpy/OpenCV versions run, and the figures say so)
#   stages   decode, cleanup and the model per image on one core (bench.stage_bench --from
#            on the packed cells: the host has no fonts)
#   parity   CUDA parity of the shipped model (validate, TF32 off), the classifier per provider
#   probe    start-up costs of the host's Python: what every scan process pays before work
#            (as scan's processes run it: one BLAS thread)
#   fixed    a scan's fixed cost: 10 files, 2 and 16 workers, each provider, CPU per role
#   choices  180,000 MNIST PNGs at 16 workers, scan's defaults against the alternatives side
#            by side (four Celery parents; small files inline)
#   sweep    60,000 MNIST PNGs, 1-16 workers on each provider, CPU per role
#   cells    15,000 form cells (3,000 five times), the same
#   mps      the CUDA points again with NVIDIA's Multi-Process Service running (one GPU context
#            shared by every process, not one each that the GPU switches between); the
#            daemon is started here and stopped at the end (no device setting changes)
set -uo pipefail
sets=${1:?usage: bench/gpu_scale.sh SETS_DIR OUTDIR}
out=${2:?usage: bench/gpu_scale.sh SETS_DIR OUTDIR}
steps=" ${STEPS:-build stages parity probe fixed choices sweep cells mps} "
py=${PYTHON:-python3}
mkdir -p "$out"
source "$(dirname "$0")/gpu_env.sh"
nproc; lscpu | grep -E "^Model name|^Thread|^Core|^Socket"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c 'import cv2, numpy, PIL, psutil, onnxruntime as o; print("cv2", cv2.__version__, "numpy",
  numpy.__version__, "onnxruntime", o.__version__, o.get_available_providers())'
sweep() { "$py" -m bench.gpu_sweep run "$@"; }
# compileall writes bytecode whatever PYTHONDONTWRITEBYTECODE says (-q: errors only). The
# package's top-level files are imported through gpu_env.sh's links in $work/pkg/digitscan,
# whose own __pycache__ Python reads; its linked folders are these checkout folders.
"$py" -m compileall -q -j 0 $( [[ -d /tmp/site ]] && echo /tmp/site ) "$work/pkg/digitscan" \
  worker trainer export bench || echo "compileall: some files did not compile (above)"
if [[ $steps == *" build "* ]]; then
  include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  # setup.py's flags (-ffp-contract=off: the rule search rounds as numpy does) on Python's.
  ${CC:-cc} -O3 -DNDEBUG -fwrapv -fno-strict-aliasing -fPIC -shared -ffp-contract=off \
    -I"$include" worker/_cleanup.c -o "worker/_cleanup$suffix" 2>&1 | tail -3
fi
"$py" -c 'from digitscan.worker import imaging; print("compiled cleanup:", imaging.COMPILED)'
if [[ $steps == *" stages "* ]]; then
  mkdir -p /tmp/stages && tar xzf "$sets/cells.tar.gz" -C /tmp/stages &&
    timeout 120 "$py" -m bench.stage_bench --from /tmp/stages/cells 2>&1 | tee "$out/stages.txt"
fi
if [[ $steps == *" parity "* ]]; then
  tar xzf "$sets/mnist-raw.tar.gz"
  timeout 120 "$py" -c 'from digitscan.cli import main; main()' validate models/digits.pt \
    models/digits.onnx --data data 2>&1 | tee "$out/validate.txt"
  timeout 60 "$py" -m bench.provider_bench --model models/digits.onnx --data data 2>&1 | tee "$out/provider.txt"
fi
if [[ $steps == *" probe "* ]]; then
  for code in "import onnxruntime" "import onnxruntime as o; o.get_available_providers()" \
      "import digitscan.worker.client" "import digitscan.worker.model" "import cv2"; do
    echo "$code:"; TIMEFORMAT="  %R s wall, %U s user, %S s sys"
    time OPENBLAS_NUM_THREADS=1 "$py" -c "$code"
  done 2>&1 | tee "$out/probe.txt"
fi
if [[ $steps == *" fixed "* ]]; then
  mkdir -p /tmp/ten && tar xzf "$sets/mnist.tar.gz" -C /tmp/ten && mkdir -p /tmp/ten10 &&
    cp $(ls -d /tmp/ten/mnist/* | head -10) /tmp/ten10/ && rm -rf /tmp/ten/mnist &&
    tar czf /tmp/ten/ten.tar.gz -C /tmp ten10 &&
    sweep /tmp/ten/ten.tar.gz --repeat 1 --cpu 2,16 --cuda 2,16 --out "$out/fixed.json"
fi
if [[ $steps == *" choices "* ]]; then
  sweep "$sets/mnist.tar.gz" --repeat 3 --cpu 16 --cuda 16 \
    --variants "" POOL_PER_NODE=4 BY_PATH_FROM_WORKERS=99 --split 2 --out "$out/choices.json"
fi
if [[ $steps == *" sweep "* ]]; then
  sweep "$sets/mnist.tar.gz" --cpu 2,4,8,16 --cuda 1,2,4,8,16 --out "$out/mnist.json"
fi
if [[ $steps == *" cells "* ]]; then
  sweep "$sets/cells.tar.gz" --repeat 5 --cpu 2,8,16 --cuda 1,8,16 --out "$out/cells.json"
fi
if [[ $steps == *" mps "* ]]; then
  if command -v nvidia-cuda-mps-control > /dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    trap 'echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY' EXIT
    nvidia-cuda-mps-control -d && echo "MPS daemon started"
    timeout 240 "$py" -m bench.gpu_sweep run "$sets/mnist.tar.gz" --cpu 0 --cuda 4,8,16 \
      --out "$out/mps.json" 2>&1 | tee "$out/mps.txt"
    timeout 120 "$py" -m bench.gpu_sweep run "$sets/mnist.tar.gz" --repeat 3 --cpu 0 --cuda 16 \
      --out "$out/mps180.json" 2>&1 | tee -a "$out/mps.txt"
    cat "$CUDA_MPS_LOG_DIRECTORY"/control.log 2>/dev/null | tail -5
  else
    echo "no nvidia-cuda-mps-control on this host" | tee "$out/mps.txt"
  fi
fi
