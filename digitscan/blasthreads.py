"""Imported first by the entry points (the CLI, ``celery -A digitscan.worker.app``), before
numpy: one OpenBLAS thread unless the user set ``OPENBLAS_NUM_THREADS``.

numpy's OpenBLAS starts a thread per core when numpy is imported, and each spins a while
before it sleeps: on a 16-core GPU host `import onnxruntime` (numpy with it) took 2.4 s of
CPU in 0.46 s of wall time, in every process of a scan (client, each Celery parent) while
its workers start (bench/gpu_scale.sh's probe, 2026-11-27); 2 cores here: 0.13 s against
0.07 s. digitscan's numpy work is elementwise or tiny (the models run in onnxruntime and
torch, with threads of their own), so those threads never pay for themselves.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
