"""Integration: a real Redis server and real Celery worker processes, loopback only."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import redis
from PIL import Image

from digitscan.worker.celeryapp import make_app
from digitscan.worker.celeryconfig import TASK_NAME
from digitscan.worker.client import submit, wait, write_results
from digitscan.worker.embedded import LocalWorkers
from digitscan.worker.settings import Settings, SubmitOptions
from digitscan.worker.store import ResultStore

pytestmark = pytest.mark.integration


def png(image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pool(redis_server, shipped_model, tmp_path_factory):
    """One worker process with two pool children, on a queue of its own."""
    settings = Settings(broker_url=redis_server.url, model=str(shipped_model),
                        queue=f"test-{uuid.uuid4().hex[:8]}", concurrency=2, result_ttl=600)
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with LocalWorkers(settings.to_env(), 2, log) as workers:
        workers.wait_ready()
        yield settings, workers


@pytest.fixture()
def store(pool):
    settings, _ = pool
    return ResultStore.from_url(settings.results_url, settings.result_ttl)


@pytest.fixture()
def digits_dir(tmp_path, mnist):
    """40 MNIST test digits as dark-on-light PNG files, named by index."""
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i:03d}.png").write_bytes(png(255 - mnist.test_images[i]))
    return folder


def run_job(pool, store, inputs, tmp_path, **options) -> list[dict]:
    settings, workers = pool
    job = submit([str(i) for i in inputs], settings, SubmitOptions(**options), store)
    wait(store, job.job, progress=False, timeout=120, check=workers.check)
    out = tmp_path / "results.jsonl"
    assert write_results(store, job.job, out) == job.total
    return [json.loads(line) for line in out.read_text().splitlines()]


def assert_all_read(rows: list[dict], n: int) -> None:
    """``n`` rows, each a digit: an error line is not a success."""
    assert len(rows) == n
    assert [r["error"] for r in rows] == [None] * n
    assert all(isinstance(r["digit"], int) for r in rows)


def test_submit_and_collect_in_input_order(pool, store, digits_dir, mnist, shipped_model, tmp_path):
    rows = run_job(pool, store, [digits_dir], tmp_path)
    assert [Path(r["source"]).name for r in rows] == [f"{i:03d}.png" for i in range(40)]
    correct = sum(r["digit"] == mnist.test_labels[i] for i, r in enumerate(rows))
    assert correct >= 39
    card = json.loads(shipped_model.with_suffix(".json").read_text())
    assert all(r["model"] == card["sha256"] and r["error"] is None for r in rows)
    assert all(0 < r["confidence"] <= 1 for r in rows)


def test_chunking_splits_and_loses_nothing(pool, store, digits_dir, tmp_path):
    settings, workers = pool
    job = submit([str(digits_dir)], settings, SubmitOptions(chunk_size=7), store)
    assert (job.total, job.chunks) == (40, 6)
    info = wait(store, job.job, progress=False, timeout=120, check=workers.check)
    assert info["done"] == 40 and info["chunks"] == 6


def test_archives_and_bad_images_next_to_good_ones(pool, store, mnist, tmp_path):
    good = png(255 - mnist.test_images[0])  # a 7
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("ok.png", good)
        zf.writestr("text.png", b"definitely not an image")
        zf.writestr("cut.png", good[:60])
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("in/ok.png")
        info.size = len(good)
        tf.addfile(info, io.BytesIO(good))
    (tmp_path / "empty.png").write_bytes(b"")
    rows = run_job(pool, store, [tmp_path / "a.zip", tmp_path / "b.tar.gz", tmp_path / "empty.png"],
                   tmp_path)
    by_source = {r["source"].split("/")[-1]: r for r in rows}
    assert len(rows) == 5
    assert by_source["a.zip:ok.png"]["digit"] == 7
    assert by_source["a.zip:text.png"]["error"].startswith("unsupported format")
    assert by_source["a.zip:cut.png"]["error"].startswith("corrupt image")
    assert by_source["empty.png"]["error"] == "corrupt image: empty file"
    tar_row = next(r for r in rows if r["source"].endswith("b.tar.gz:in/ok.png"))
    assert tar_row["digit"] == 7


def test_every_result_key_has_a_ttl(pool, store, digits_dir, tmp_path):
    client = redis.Redis.from_url(pool[0].results_url)
    # The server is shared by the session: keys other modules' jobs left (with their own
    # TTLs) would make this depend on the order the modules run in.
    client.flushall()
    run_job(pool, store, [digits_dir], tmp_path)
    keys = list(client.scan_iter("digitscan:*"))
    assert keys
    assert all(0 < client.ttl(k) <= 600 for k in keys)


def test_pickle_message_is_refused_and_never_executed(pool, store, digits_dir, tmp_path):
    settings, workers = pool
    canary = tmp_path / "canary"

    class Canary:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    make_app(settings).send_task(TASK_NAME, args=[Canary()], serializer="pickle",
                                 queue=settings.queue)
    deadline = time.monotonic() + 30
    while b"pickle" not in workers.logfile.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"Refusing to deserialize untrusted content of type pickle" in workers.logfile.read_bytes()
    assert not canary.exists()
    assert redis.Redis.from_url(settings.broker_url).llen(settings.queue) == 0  # not redelivered
    assert_all_read(run_job(pool, store, [digits_dir], tmp_path), 40)  # the worker is fine


def test_a_json_chunk_sent_by_the_version_before_is_read(pool, store, mnist, tmp_path):
    """A client before msgpack sent JSON chunks with the images in base64, stored by kombu
    as UTF-8 text: chunks still queued when the workers are upgraded are read."""
    import base64

    settings, workers = pool
    app = make_app(settings)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                         "body_encoding": "utf-8"}
    job = uuid.uuid4().hex
    store.create_job(job, total=3, chunks=1, meta={"queue": settings.queue})
    items = [{"i": i, "source": f"{i}.png",
              "data": base64.b64encode(png(255 - mnist.test_images[i])).decode()} for i in range(3)]
    message = {"v": 1, "job": job, "chunk": 0, "items": items}
    client = redis.Redis.from_url(settings.broker_url)
    client.hset(f"digitscan:job:{job}:pending", 0, json.dumps(message))
    app.send_task(TASK_NAME, args=[message], queue=settings.queue, task_id=f"{job}:0",
                  serializer="json")
    wait(store, job, progress=False, timeout=120, check=workers.check)
    out = tmp_path / "old.jsonl"
    assert write_results(store, job, out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["digit"] for r in rows] == [int(d) for d in mnist.test_labels[:3]]
    assert store.pending_chunks(job) == []


def test_malformed_json_message_is_dropped_not_retried(pool, store, digits_dir, tmp_path):
    settings, workers = pool
    make_app(settings).send_task(TASK_NAME, args=[{"v": 1, "job": "nope"}], queue=settings.queue)
    deadline = time.monotonic() + 30
    while b"dropping malformed message" not in workers.logfile.read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert_all_read(run_job(pool, store, [digits_dir], tmp_path), 40)


def test_worker_refuses_to_start_with_a_tampered_model(redis_server, model_copy, tmp_path):
    model_copy.write_bytes(model_copy.read_bytes() + b"\0")
    settings = Settings(broker_url=redis_server.url, model=str(model_copy), queue="tampered")
    log = refused_start(settings, tmp_path)
    assert str(model_copy) in log and "pins" in log


def refused_start(settings: Settings, tmp_path: Path) -> str:
    """Start a worker that must exit on its own with a failure; return its log."""
    workers = LocalWorkers(settings.to_env(), 1, tmp_path / "w.log").start()
    try:
        deadline = time.monotonic() + 60
        while workers.proc.poll() is None:
            assert time.monotonic() < deadline, "the worker kept running"
            time.sleep(0.2)
        assert workers.proc.returncode != 0
        return workers.logfile.read_text()
    finally:
        workers.stop()


def test_worker_refuses_a_model_onnxruntime_cannot_load(redis_server, model_copy, tmp_path):
    """A file whose sha256 matches its card but that is no model: before, the worker started
    and every chunk vanished. Now `digitscan worker` says so in one line and a plain
    `celery -A` worker exits at start-up."""
    import json
    import os
    import subprocess
    import sys

    from digitscan.hashing import sha256_file

    model_copy.write_bytes(b"this is not an ONNX model")
    card = json.loads(model_copy.with_suffix(".json").read_text())
    card["sha256"] = sha256_file(model_copy)
    model_copy.with_suffix(".json").write_text(json.dumps(card))
    settings = Settings(broker_url=redis_server.url, model=str(model_copy), queue="unloadable")
    cli = subprocess.run([sys.executable, "-m", "digitscan.cli", "worker"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, **settings.to_env()})
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert cli.stderr.startswith(f"error: onnxruntime cannot load {model_copy}")
    assert "onnxruntime cannot load" in refused_start(settings, tmp_path)


def test_digitscan_worker_answers_a_job_and_stops_warm(redis_server, shipped_model, mnist,
                                                        tmp_path):
    """`digitscan worker` runs Celery's worker command itself (celeryapp.run_worker, not
    through the `celery` umbrella): it becomes ready, answers a job on its queue, and a
    SIGTERM stops it warm with status 0."""
    import signal

    for i in range(12):
        (tmp_path / f"{i:02d}.png").write_bytes(png(mnist.test_images[i]))
    settings = Settings(broker_url=redis_server.url, model=str(shipped_model),
                        queue=f"cli-{uuid.uuid4().hex[:6]}")
    env = {**os.environ, **settings.to_env()}
    proc = subprocess.Popen([sys.executable, "-m", "digitscan.cli", "-v", "worker", "-c", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        said = []
        for line in proc.stderr:  # Celery's own log lines, with -v
            said.append(line)
            if " ready." in line:
                break
        assert proc.poll() is None, "".join(said)
        job = subprocess.run([sys.executable, "-m", "digitscan.cli", "-q", "submit", str(tmp_path),
                              "--wait", "--out", str(tmp_path / "r.jsonl")],
                             capture_output=True, text=True, timeout=120, env=env)
        assert job.returncode == 0, job.stderr
        rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
        assert [r["digit"] for r in rows] == [int(d) for d in mnist.test_labels[:12]]
        proc.send_signal(signal.SIGTERM)
        out, rest = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "Warm shutdown" in out + rest, (out + rest)[-2000:]
    finally:
        proc.kill()


def test_hostile_corpus_leaves_workers_alive_and_small(pool, store, mnist, tmp_path):
    from .hostile import write_corpus

    settings, workers = pool
    expected = write_corpus(tmp_path / "corpus", mnist)
    rows = run_job(pool, store, [tmp_path / "corpus"], tmp_path)
    assert len(rows) == len(expected)
    workers.check()  # still running
    children = Path(f"/proc/{workers.proc.pid}/task/{workers.proc.pid}/children").read_text().split()
    assert len(children) == 2
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        rss_mb = int(line.split()[1]) / 1024
        assert rss_mb < 300, f"pool process {pid} holds {rss_mb:.0f} MB"


# The celery -A module's pool size, as Celery will read it, where onnxruntime offers what
# OFFERED says (CUDA cannot be real here: only its presence in the provider list is made up).
# At most one process a GPU here, so that it differs from one a core on a 2-core machine.
POOL_SIZE = """
import onnxruntime
import digitscan.worker.model as model
model.CUDA_PROCESSES = 1
offered = {offered!r}
if offered:
    onnxruntime.get_available_providers = lambda: offered
import digitscan.worker.app as a
print(a.app.conf.worker_concurrency)
"""


@pytest.mark.parametrize(("offered", "env", "expected"), [
    (None, {}, "cores"),  # the CPU provider: one a core, as Celery's default
    (["CUDAExecutionProvider", "CPUExecutionProvider"], {}, "cuda"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], {"DIGITSCAN_CONCURRENCY": "3"}, "3"),
    (None, {"DIGITSCAN_PROVIDER": "cuda"}, "None"),  # refused at start-up, in one line
])
def test_plain_celery_takes_few_processes_on_a_gpu(offered, env, expected):
    from digitscan.worker.model import cores

    base = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSCAN_")}
    out = subprocess.run([sys.executable, "-c", POOL_SIZE.format(offered=offered)],
                         env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    want = {"cores": str(cores()), "cuda": "1"}.get(expected, expected)
    assert out.stdout.split()[-1] == want, out.stdout + out.stderr


# The worker's start-up step, in a process of its own (it freezes that process's objects).
FROZEN = """
import gc, sys, types
from digitscan.worker.celeryapp import VerifyModel, make_app
from digitscan.worker.settings import Settings
app = make_app(Settings(model={model!r}))
before = gc.get_freeze_count()
VerifyModel(types.SimpleNamespace(app=app, concurrency=2))
print(before, gc.get_freeze_count(), "cv2" in sys.modules)
"""


def test_the_workers_parent_freezes_what_it_holds_before_its_pool_forks(shipped_model):
    """Celery runs a full garbage collection before forking each pool process; what the
    parent holds by then (Celery, onnxruntime, OpenCV: the imaging stack is imported there,
    once for all the pool) is frozen, so that each of those collections, and the
    children's, skips it."""
    out = subprocess.run([sys.executable, "-c", FROZEN.format(model=str(shipped_model))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after, imaging = out.stdout.split()
    assert int(before) == 0 and int(after) > 10_000 and imaging == "True", out.stdout


def test_plain_celery_sizes_onnxruntime_threads_by_its_pool(redis_server, shipped_model, tmp_path):
    """`celery -A digitscan.worker.app worker --concurrency 2` with no DIGITSCAN_CONCURRENCY:
    each pool process takes cores // 2 threads, not all the cores."""
    from digitscan.worker.model import default_threads

    settings = Settings(broker_url=redis_server.url, model=str(shipped_model),
                        queue=f"threads-{uuid.uuid4().hex[:6]}")
    env = {k: v for k, v in settings.to_env().items() if k != "DIGITSCAN_CONCURRENCY"}
    with LocalWorkers(env, 2, tmp_path / "w.log") as workers:
        workers.wait_ready()
        deadline = time.monotonic() + 60
        while workers.logfile.read_text().count("model ") < 3:  # verified once, loaded twice
            assert time.monotonic() < deadline, workers.logfile.read_text()[-2000:]
            time.sleep(0.1)
        log = workers.logfile.read_text()
    assert "2 pool processes" in log
    assert log.count(f", {default_threads(2)} threads)") == 2
