"""The entry points start numpy with one OpenBLAS thread (digitscan/blasthreads.py): on a
16-core host each BLAS thread's start-up spin cost every scan process ~2.4 s of CPU."""

import os
import subprocess
import sys

import pytest

# Says what OPENBLAS_NUM_THREADS holds at the moment numpy is first imported.
WATCH = """
import os, sys
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            print("at numpy:", os.environ.get("OPENBLAS_NUM_THREADS"), flush=True)
            sys.meta_path.remove(self)
sys.meta_path.insert(0, Watch())
import {module}
"""


def _run(code: str, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, text=True,
                          capture_output=True, timeout=120, check=True).stdout


@pytest.mark.parametrize("module", ["digitscan.cli", "digitscan.worker.app"])
def test_numpy_starts_with_one_blas_thread_at_each_entry_point(module):
    assert "at numpy: 1" in _run(WATCH.format(module=module))
    assert "at numpy: 3" in _run(WATCH.format(module=module), OPENBLAS_NUM_THREADS="3")


def test_the_cli_process_holds_no_blas_threads():
    count = "import glob, numpy; print(len(glob.glob('/proc/self/task/*')))"
    assert _run(f"import digitscan.cli; {count}").strip() == "1"
    # Test of the test: numpy alone, given two BLAS threads, starts a second thread.
    assert _run(count, OPENBLAS_NUM_THREADS="2").strip() == str(min(2, os.cpu_count()))
