"""Fault tests: real Redis, real worker processes, loopback only, each bounded in time.

Each ends by checking that every image of the job has exactly one final result.
"""

from __future__ import annotations

import io
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
from PIL import Image

from digitscan.worker.broker import queued
from digitscan.worker.client import Submission, submit, wait
from digitscan.worker.embedded import EmbeddedRedis, LocalWorkers
from digitscan.worker.reconcile import Reconciler
from digitscan.worker.settings import Settings, SubmitOptions
from digitscan.worker.store import ResultStore, job_key

from .faultapp import faulty_workers

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N_IMAGES = 240
CHUNK = 8  # 30 chunks


@pytest.fixture()
def files(tmp_path, mnist) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(N_IMAGES):
        buf = io.BytesIO()
        Image.fromarray(255 - mnist.test_images[i]).save(buf, "PNG")
        (folder / f"{i:04d}.png").write_bytes(buf.getvalue())
    return folder


def settings_for(server: EmbeddedRedis, model: Path, **kw) -> Settings:
    return Settings(broker_url=server.url, model=str(model), queue=f"q-{uuid.uuid4().hex[:6]}",
                    concurrency=2, **kw)


def start_pool(settings: Settings, log: Path, **env) -> LocalWorkers:
    """Two pool processes of the test app (tests/faultapp.py); ``env``: its fault variables."""
    pool = faulty_workers({**settings.to_env(), **env}, 2, log).start()
    pool.wait_ready()
    return pool


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def wait_for_progress(store: ResultStore, job: str, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while store.info(job)["done"] < at_least:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)


def assert_exactly_once(store: ResultStore, job: str, total: int) -> dict:
    info = store.info(job)
    assert info["done"] == info["total"] == total
    results = list(store.iter_results(job, total))
    assert [r["index"] for r in results] == list(range(total))  # one per image, none missing
    return info


def finish_with_a_new_pool(server: EmbeddedRedis, settings: Settings, store: ResultStore,
                           job: str, log: Path) -> None:
    """Start a pool, let it finish ``job``, stop it; every image once, no chunk run twice."""
    pool = start_pool(settings, log)
    try:
        wait(store, job, progress=False, timeout=120, check=pool.check)
    finally:
        pool.stop()
    assert_exactly_once(store, job, N_IMAGES)
    assert set(attempts(server, job).values()) == {1}  # no chunk ran twice


def wait_for_log(pool: LocalWorkers, text: str, times: int = 1, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pool.logfile.read_text(errors="replace").count(text) < times:
        pool.check()
        assert time.monotonic() < deadline, f"the worker never logged {text!r}"
        time.sleep(0.05)


def attempts(server: EmbeddedRedis, job: str) -> dict[int, int]:
    raw = redis.Redis.from_url(server.url).hgetall(job_key(job, "attempts"))
    return {int(k): int(v) for k, v in raw.items()}


def wait_until_running(server: EmbeddedRedis, store: ResultStore, job: str, n: int) -> None:
    """Until ``n`` chunks are mid-way: delivered to a pool process (an attempt is counted
    when the task starts) and not yet stored."""
    deadline = time.monotonic() + 60
    while len(set(attempts(server, job)) - store.done_chunks(job)) < n:
        assert time.monotonic() < deadline, "the pool never had that many chunks running"
        time.sleep(0.02)


def test_sigkill_of_a_pool_child_mid_chunk(tmp_path, files, shipped_model):
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        pool = start_pool(settings, tmp_path / "w.log", DIGITSCAN_TEST_DELAY_S="1.0")
        try:
            job = submit([str(files)], settings, SubmitOptions(chunk_size=CHUNK), store)
            wait_for_progress(store, job.job, CHUNK)
            wait_until_running(server, store, job.job, 2)  # both children mid-way in 1 s chunks
            os.kill(children(pool.proc.pid)[0], signal.SIGKILL)
            wait(store, job.job, progress=False, timeout=120, check=pool.check)
        finally:
            pool.stop()
        info = assert_exactly_once(store, job.job, N_IMAGES)
        assert info["errors"] == 0
        counts = attempts(server, job.job)
        assert sorted(counts.values())[-1] == 2  # the killed chunk ran again, once
        assert b"WorkerLostError" in pool.logfile.read_bytes()


def test_sigkill_of_the_whole_worker_then_a_new_one(tmp_path, files, shipped_model):
    with EmbeddedRedis(tmp_path / "redis") as server:
        # Short visibility timeout: unacked chunks of the dead worker come back in seconds.
        settings = settings_for(server, shipped_model, visibility_timeout=6, task_time_limit=5,
                                repair_after=20)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        first = start_pool(settings, tmp_path / "w1.log", DIGITSCAN_TEST_DELAY_S="0.3")
        options = SubmitOptions(chunk_size=CHUNK)
        job = submit([str(files)], settings, options, store)
        wait_for_progress(store, job.job, CHUNK)
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.stop()
        second = start_pool(settings, tmp_path / "w2.log")
        # As `submit --wait` and `scan` do: a SIGKILL that lands between kombu's BRPOP and
        # its unacked record loses that message (the known gap); the reconciler re-sends it
        # from its pending copy. The unacked sweep restores the rest.
        reconciler = Reconciler(store, settings, job.job)
        try:
            wait(store, job.job, progress=False, timeout=120, check=second.check,
                 reconciler=reconciler)
        finally:
            second.stop()
        assert assert_exactly_once(store, job.job, N_IMAGES)["errors"] == 0
        assert reconciler.resent <= 2  # normally 0


def test_warm_shutdown_mid_job_then_restart_runs_nothing_twice(tmp_path, files, shipped_model):
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        first = start_pool(settings, tmp_path / "w1.log", DIGITSCAN_TEST_DELAY_S="0.3")
        job = submit([str(files)], settings, SubmitOptions(chunk_size=CHUNK), store)
        wait_for_progress(store, job.job, CHUNK)
        first.stop()  # SIGTERM: running chunks finish, the rest stay queued
        partial = store.info(job.job)["done"]
        assert 0 < partial < N_IMAGES
        finish_with_a_new_pool(server, settings, store, job.job, tmp_path / "w2.log")


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no-persistence"])
def test_redis_restart_mid_job_with_a_client_waiting(tmp_path, files, shipped_model, appendonly):
    with EmbeddedRedis(tmp_path / "redis", appendonly=appendonly) as server:
        settings = settings_for(server, shipped_model, repair_after=3)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        pool = start_pool(settings, tmp_path / "w.log", DIGITSCAN_TEST_DELAY_S="0.2")
        try:
            job = Submission(store, settings, SubmitOptions(chunk_size=CHUNK, window=12),
                             [str(files)]).start()
            reconciler = Reconciler(store, settings, job.job, app=job.app)
            job.pump()  # the first window: 12 of 30 chunks
            wait_for_progress(store, job.job, CHUNK)
            server.stop()  # SIGTERM: Redis writes its AOF before it exits, and stop() waits
            server.start()
            wait(store, job.job, progress=False, timeout=180, check=pool.check,
                 reconciler=reconciler, submission=job)
        except BaseException:
            # Failed once in a loaded run and never again in isolation: what the workers
            # logged is what the next reader needs (pytest shows it with the failure).
            print(pool.logfile.read_text(errors="replace")[-6000:])
            raise
        finally:
            pool.stop()
        assert assert_exactly_once(store, job.job, N_IMAGES)["errors"] == 0
        # With AOF the queue and the pending copies survive: the job goes on where it was.
        # Without persistence Redis forgot the job: the waiting client sends it again, each
        # item checked against what it first read.
        sent = f"{job.next_chunk} chunks sent for {N_IMAGES // CHUNK}"
        if appendonly:
            assert job.next_chunk == N_IMAGES // CHUNK, sent
        else:
            assert job.next_chunk > N_IMAGES // CHUNK, sent


def test_redis_sigkill_with_aof_and_no_client_waiting(tmp_path, files, shipped_model):
    """The README's production setup crashes (SIGKILL: no final AOF flush) mid-job and
    restarts; nobody waits on the job. The pool holds its chunks through the outage and its
    reconciler re-sends any message the crash lost: the job completes on its own."""
    with EmbeddedRedis(tmp_path / "redis", appendonly=True) as server:
        settings = settings_for(server, shipped_model, repair_after=2)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        pool = start_pool(settings, tmp_path / "w.log", DIGITSCAN_TEST_DELAY_S="0.3")
        try:
            job = submit([str(files)], settings, SubmitOptions(chunk_size=CHUNK), store)
            wait_for_progress(store, job.job, CHUNK)
            wait_until_running(server, store, job.job, 2)
            server.kill()
            wait_for_log(pool, "holding the chunk")  # Redis stays down until a chunk waits
            server.start()
            wait(store, job.job, progress=False, timeout=180, check=pool.check)  # no reconciler
        finally:
            pool.stop()
        assert assert_exactly_once(store, job.job, N_IMAGES)["errors"] == 0
        log = pool.logfile.read_text()
        assert "holding the chunk" in log and "Unrecoverable" not in log


def test_results_store_outage_holds_chunks_and_loses_none(tmp_path, files, shipped_model):
    """A separate results Redis goes away mid-job. Workers hold the chunk they have, take
    no others (the queue is not pulled into memory as delayed retries), hand a chunk back
    once its time is up, and finish when the store returns."""
    with EmbeddedRedis(tmp_path / "broker") as broker, \
            EmbeddedRedis(tmp_path / "results", appendonly=True) as results:
        settings = settings_for(broker, shipped_model, result_backend=results.url,
                                task_time_limit=26, visibility_timeout=60)  # holds up to 6 s
        store = ResultStore.from_url(results.url, settings.result_ttl)
        pool = start_pool(settings, tmp_path / "w.log", DIGITSCAN_TEST_DELAY_S="0.1")
        try:
            job = submit([str(files)], settings, SubmitOptions(chunk_size=CHUNK), store)
            wait_for_progress(store, job.job, CHUNK)
            done_before = len(store.done_chunks(job.job))
            results.stop()
            wait_for_log(pool, "returning it to the queue", times=2)
            # Both processes held, then handed back, and took no more than they hold: all
            # but the done chunks wait in the broker, less the two the processes hold again,
            # and less up to two more that finished between done_before and the stop.
            in_broker = queued(redis.Redis.from_url(broker.url), settings.queue)
            assert in_broker >= N_IMAGES // CHUNK - done_before - 2 - 2
            results.start()
            wait(store, job.job, progress=False, timeout=120, check=pool.check)
        finally:
            pool.stop()
        info = assert_exactly_once(store, job.job, N_IMAGES)
        assert info["errors"] == 0 and info["dead_chunks"] == 0


def test_poison_chunk_is_dead_lettered_and_the_rest_completes(tmp_path, files, shipped_model):
    (files / "0100.png").rename(files / "0100-POISONPILL.png")
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        pool = start_pool(settings, tmp_path / "w.log", DIGITSCAN_TEST_POISON="POISONPILL")
        try:
            job = submit([str(files)], settings, SubmitOptions(chunk_size=CHUNK), store)
            wait(store, job.job, progress=False, timeout=180, check=pool.check)
        finally:
            pool.stop()
        info = assert_exactly_once(store, job.job, N_IMAGES)
        dead = store.dead_chunks(job.job)
        assert list(dead) == [100 // CHUNK] and "delivered 3 times" in dead[100 // CHUNK]
        assert info["errors"] == CHUNK and info["dead_chunks"] == 1
        rows = list(store.iter_results(job.job, N_IMAGES))
        assert all(r["error"] is None for r in rows if r["index"] // CHUNK != 100 // CHUNK)


def test_load_100k_images_exact_count_bounded_memory(tmp_path, mnist, shipped_model):
    """The MNIST test set ten times (100,000 images) through 2 workers, after a 10,000 run."""
    from digitscan.trainer.pngs import write_test_pngs

    write_test_pngs(mnist, tmp_path / "png")
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        client = redis.Redis.from_url(server.url)
        pool = start_pool(settings, tmp_path / "w.log")
        rates = {}
        try:
            for copies in (1, 10):
                t0 = time.perf_counter()
                job = submit([str(tmp_path / "png")] * copies, settings, SubmitOptions(), store)
                wait(store, job.job, progress=False, timeout=600, check=pool.check)
                rates[copies] = job.total / (time.perf_counter() - t0)
                info = assert_exactly_once(store, job.job, 10_000 * copies)
                # A few MNIST digits are read as "not a digit" (0.45 % of the test set are
                # flagged one way or another); errors are results, but not many of them.
                assert info["errors"] <= 0.01 * info["total"]
        finally:
            pool.stop()
        keys = list(client.scan_iter("digitscan:*", count=1000))
        assert keys and all(client.ttl(k) > 0 for k in keys)
        peak_mb = int(client.info("memory")["used_memory_peak"]) / 2**20
    # Speed is for `make bench` (bench/worker_bench.py); here only what cannot flake.
    print(f"\n10k: {rates[1]:.0f} images/s, 100k: {rates[10]:.0f} images/s, "
          f"Redis peak {peak_mb:.0f} MB")
    assert peak_mb < 256


def test_status_repair_re_sends_what_was_submitted(tmp_path, files, shipped_model, mnist,
                                                   monkeypatch):
    """Every message is lost; then a file is added to the input folder, and the repair is
    run from another folder whose `in/` holds other images. The repair re-sends the chunks
    as they were submitted: every image gets its own answer, none shifts, none is re-read."""
    import shutil
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    other = tmp_path / "elsewhere"
    shutil.copytree(files, other / "in")
    for i, path in enumerate(sorted((other / "in").iterdir())):  # other digits, same names
        path.write_bytes((files / f"{(i + 1) % N_IMAGES:04d}.png").read_bytes())
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        job = submit([files.name], settings, SubmitOptions(chunk_size=CHUNK), store)  # "in"
        client = redis.Redis.from_url(server.url)
        assert client.llen(settings.queue) == N_IMAGES // CHUNK
        client.delete(settings.queue)  # every message lost before any worker took it
        (files / "0000-added.png").write_bytes((files / "0005.png").read_bytes())
        env = {**os.environ, **settings.to_env()}
        out = subprocess.run([sys.executable, "-m", "digitscan.cli", "status", "--repair", job.job],
                             capture_output=True, text=True, env=env, timeout=120, cwd=other)
        assert out.returncode == 0, out.stderr
        assert f"re-sent {N_IMAGES // CHUNK} lost chunks" in out.stdout
        assert client.llen(settings.queue) == N_IMAGES // CHUNK
        finish_with_a_new_pool(server, settings, store, job.job, tmp_path / "w.log")
        rows = list(store.iter_results(job.job, N_IMAGES))
        assert [r["source"] for r in rows] == [f"in/{i:04d}.png" for i in range(N_IMAGES)]
        right = sum(r["digit"] == mnist.test_labels[i] for i, r in enumerate(rows))
        assert right >= 0.97 * N_IMAGES  # a shifted or re-read job scores ~10 %


def test_a_worker_that_cannot_see_the_storage_takes_nothing_from_those_that_can(
        tmp_path, files, shipped_model):
    """--by-reference, two workers; on one the shared folder is not mounted (a private
    mount namespace with an empty tmpfs over it). That worker hands its chunks back and
    backs off: every image is read by the worker that can, none becomes an error."""
    import shutil

    shared = tmp_path / "shared"
    shutil.copytree(files, shared / "in")
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        blind = faulty_workers(settings.to_env(), 1, tmp_path / "blind.log", name="blind", prefix=(
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount -t tmpfs none {shared} && exec \"$0\" \"$@\"")).start()
        seeing = faulty_workers(settings.to_env(), 1, tmp_path / "seeing.log", name="seeing")
        try:
            blind.wait_ready()
            # The blind worker alone first: it must take a chunk and hand it back.
            job = submit([str(shared / "in")], settings,
                         SubmitOptions(chunk_size=CHUNK, by_reference=True), store)
            wait_for_log(blind, "handing it back")
            seeing.start().wait_ready()
            wait(store, job.job, progress=False, timeout=180, check=seeing.check)
        finally:
            blind.stop()
            seeing.stop()
        info = assert_exactly_once(store, job.job, N_IMAGES)
        assert info["errors"] == 0 and info["dead_chunks"] == 0
        assert "is the shared storage mounted here?" in blind.logfile.read_text()


def test_waiting_with_no_worker_running_never_duplicates_the_backlog(tmp_path, files,
                                                                      shipped_model):
    """`submit --wait` with no worker: the reconciler runs every second and re-sends
    nothing, since every chunk is queued; the job then runs once when a worker starts."""
    from digitscan.errors import JobError

    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model, repair_after=1)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        job = submit([str(files)], settings, SubmitOptions(chunk_size=CHUNK), store)
        reconciler = Reconciler(store, settings, job.job)
        with pytest.raises(JobError, match="are workers running"):
            wait(store, job.job, progress=False, timeout=5, reconciler=reconciler, poll_s=0.2)
        assert reconciler.resent == 0
        assert queued(redis.Redis.from_url(server.url), settings.queue) == N_IMAGES // CHUNK
        finish_with_a_new_pool(server, settings, store, job.job, tmp_path / "w.log")


def test_a_small_job_behind_a_big_one_waits_for_one_window_not_the_whole_job(
        tmp_path, mnist, shipped_model):
    """A 100-image job submitted behind a 40,000-image job (window 16 chunks of 256):
    it completes while most of the big job is still to come. Published all at once, as
    before windows, it would wait for all 40,000."""
    import threading

    from digitscan.trainer.pngs import write_test_pngs

    write_test_pngs(mnist, tmp_path / "png")
    small = tmp_path / "small"
    small.mkdir()
    for path in sorted((tmp_path / "png").rglob("*.png"))[:100]:
        (small / path.name).write_bytes(path.read_bytes())
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        pool = start_pool(settings, tmp_path / "w.log")
        big: dict = {}
        try:
            thread = threading.Thread(target=lambda: big.update(job=submit(
                [str(tmp_path / "png")] * 4, settings, SubmitOptions(window=16), store,
                on_created=lambda job: big.update(id=job))))
            thread.start()
            while "id" not in big or store.in_flight(big["id"]) < 16:
                time.sleep(0.01)
            little = submit([str(small)], settings, SubmitOptions(), store)
            wait(store, little.job, progress=False, timeout=120, check=pool.check)
            big_done = store.info(big["id"])["done"]
            thread.join(timeout=300)
            wait(store, big["id"], progress=False, timeout=300, check=pool.check)
        finally:
            pool.stop()
        assert_exactly_once(store, little.job, 100)
        assert_exactly_once(store, big["id"], 40_000)
        assert big_done < 10_000  # the small job finished within the big job's first quarter


def test_redis_full_for_a_while_is_a_condition_not_a_crash(tmp_path, files, shipped_model):
    """Redis hits maxmemory (noeviction) mid-job for a few seconds: the worker keeps
    running and holds its chunk, the waiting client waits, and the job completes once
    memory is freed."""
    import threading

    with EmbeddedRedis(tmp_path / "redis", maxmemory="32mb") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        client = redis.Redis.from_url(server.url)
        pool = start_pool(settings, tmp_path / "w.log", DIGITSCAN_TEST_DELAY_S="1.0")
        try:
            job = submit([str(files)], settings, SubmitOptions(chunk_size=CHUNK), store)
            wait_for_progress(store, job.job, CHUNK)
            # Full: used memory above maxmemory, so every write is refused. (Filling it with
            # data instead lands a few bytes under the cap at times, and the test flakes.)
            client.config_set("maxmemory", 1)
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                client.set("probe", b"x")
            result: dict = {}
            waiter = threading.Thread(target=lambda: result.update(info=wait(
                store, job.job, progress=False, timeout=120, check=pool.check)))
            waiter.start()
            wait_for_log(pool, "holding the chunk")
            pool.check()  # still running
            client.config_set("maxmemory", 32 * 2**20)  # memory freed
            waiter.join(timeout=150)
        finally:
            pool.stop()
        assert result["info"]["complete"]
        assert assert_exactly_once(store, job.job, N_IMAGES)["errors"] == 0
        assert "Unrecoverable" not in pool.logfile.read_text()


def run_submit_wait(settings: Settings, inputs: list[str], out: Path, *extra: str) -> tuple[str, int]:
    """`digitscan submit --wait --out` in a process of its own; (stderr, its peak RSS in KB)."""
    import subprocess
    import sys

    code = ("import resource, sys\n"
            "from digitscan.cli import main\n"
            "try:\n"
            "    main(sys.argv[1:], prog_name='digitscan')\n"
            "finally:\n"
            "    print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, "submit", *inputs, "--wait", "--out",
                           str(out), *extra], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **settings.to_env()})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr, int(proc.stderr.rsplit("maxrss", 1)[1].split()[0])


def test_200k_images_through_a_64mb_redis(tmp_path, mnist, shipped_model):
    """The whole MNIST test set twenty times (200,000 images) through `submit --wait --out`
    on a Redis capped at 64 MB with noeviction: a window of chunks in flight and results
    drained into the file as they come keep Redis far below its cap. Before, this job
    stopped with a traceback after half-submitting."""
    import json

    from digitscan.trainer.pngs import write_test_pngs

    write_test_pngs(mnist, tmp_path / "png")
    with EmbeddedRedis(tmp_path / "redis", maxmemory="64mb") as server:
        settings = settings_for(server, shipped_model)
        client = redis.Redis.from_url(server.url)
        pool = start_pool(settings, tmp_path / "w.log")
        try:
            err, rss_kb = run_submit_wait(settings, [str(tmp_path / "png")] * 20,
                                          tmp_path / "r.jsonl")
        finally:
            pool.stop()
        peak_mb = int(client.info("memory")["used_memory_peak"]) / 2**20
        left = [k for k in client.scan_iter("digitscan:job:*:results")]
    assert "wrote 200000 results" in err
    with open(tmp_path / "r.jsonl") as f:
        rows = [json.loads(line) for line in f]
    labels = [int(r["source"].rsplit("/", 2)[-2]) for r in rows]
    assert len(rows) == 200_000 and len({(r["source"], i // 10_000) for i, r in enumerate(rows)}) \
        == 200_000  # each file once per copy, in input order
    assert sum(r["digit"] == y for r, y in zip(rows, labels)) >= 0.98 * 200_000
    assert not left  # drained: the job's results live in the file, not in Redis
    print(f"\n200k on a 64 MB Redis: Redis peak {peak_mb:.0f} MB, client peak RSS "
          f"{rss_kb / 1024:.0f} MB")
    assert peak_mb < 48


def test_redis_stalls_under_a_waiting_client(tmp_path, files, shipped_model):
    """Redis stops answering for 5 s (CLIENT PAUSE, as a slow fork or disk would) while
    `submit --wait --out` runs: the client waits it out; no TimeoutError traceback."""
    import subprocess
    import sys

    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = settings_for(server, shipped_model)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        pool = start_pool(settings, tmp_path / "w.log", DIGITSCAN_TEST_DELAY_S="0.2")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "digitscan.cli", "submit", str(files), "--chunk-size",
                 str(CHUNK), "--wait", "--out", str(tmp_path / "r.jsonl")],
                env={**os.environ, **settings.to_env()}, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            job = proc.stdout.readline().strip()
            wait_for_progress(store, job, CHUNK)
            redis.Redis.from_url(server.url).execute_command("CLIENT", "PAUSE", 5000, "ALL")
            _, err = proc.communicate(timeout=120)
        finally:
            pool.stop()
        assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
        assert f"wrote {N_IMAGES} results" in err
        assert (tmp_path / "r.jsonl").read_text().count("\n") == N_IMAGES
