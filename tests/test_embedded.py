"""The local worker pool that `digitscan scan` starts: how a client learns it cannot work.

`scan` queues its first chunks while the workers boot, so a worker that exits at start or
never becomes ready must end the scan's wait by itself (``LocalWorkers.check``)."""

import sys
import time

import pytest

from digitscan.errors import JobError
from digitscan.worker.embedded import LocalWorkers


def _pool(tmp_path, module_text: str, ready_timeout: float) -> LocalWorkers:
    (tmp_path / "bootapp.py").write_text(module_text)
    env = {"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}"}
    return LocalWorkers(env, 1, tmp_path / "worker.log", app_module="bootapp",
                        ready_timeout=ready_timeout)


def _until_raises(pool: LocalWorkers, limit_s: float = 30.0) -> JobError:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            pool.check()
        except JobError as exc:
            return exc
        time.sleep(0.05)
    raise AssertionError(f"check() did not raise within {limit_s} s")


def test_a_worker_that_never_becomes_ready_ends_the_wait(tmp_path):
    with _pool(tmp_path, "import time\nprint('booting', flush=True)\ntime.sleep(60)\n", 1.0) as pool:
        error = _until_raises(pool)
        assert pool.proc.poll() is None  # still running: it is the timeout that spoke
    assert "not ready after 1 s" in str(error) and "booting" in str(error)


def test_a_worker_that_exits_at_start_ends_the_wait(tmp_path):
    with _pool(tmp_path, "raise SystemExit('no model here')\n", 60.0) as pool:
        error = _until_raises(pool)
    assert "exited with status 1" in str(error) and "no model here" in str(error)


def test_a_ready_worker_passes_the_check(tmp_path, shipped_model):
    from digitscan.worker.embedded import EmbeddedRedis
    from digitscan.worker.settings import Settings

    with EmbeddedRedis(tmp_path / "redis") as server:
        env = Settings(broker_url=server.url, model=str(shipped_model), concurrency=1).to_env()
        with LocalWorkers(env, 1, tmp_path / "w.log", ready_timeout=0.0) as pool:
            with pytest.raises(JobError, match="not ready after 0 s"):
                pool.check()  # a timeout of 0: not ready yet, so too late (test of the test)
            pool.ready_timeout = 60.0
            pool.wait_ready()
            pool.ready_timeout = 0.0
            pool.check()  # ready: the timeout no longer applies
