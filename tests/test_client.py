"""Client-side plain functions: the status line and chunking."""

from __future__ import annotations

import subprocess
import sys

from digitscan.worker.client import Chunker, _clock, found_in, job_row, status_line
from digitscan.worker.inputs import find_entries
from digitscan.worker.settings import SubmitOptions

NOW = 1_800_000_000.0
INFO = {"job": "j" * 32, "total": 1000, "done": 250, "errors": 3, "dead_chunks": 0,
        "rate": 125.4, "eta_s": 6.0, "complete": False, "created": NOW - 100, "last": NOW - 1,
        "cancelled": None}


# A client as `digitscan submit` is one: it builds the app to publish chunks.
CLIENT = """
import sys
import digitscan.worker.client
from digitscan.worker.celeryapp import make_app
from digitscan.worker.settings import Settings
make_app(Settings(model={model!r}))
print(*[m for m in ("cv2", "PIL.Image", "numpy", "onnxruntime") if m in sys.modules])
"""


def test_a_client_loads_no_imaging_stack(shipped_model):
    """Publishing needs Celery and Redis, not OpenCV, Pillow, numpy or onnxruntime (~0.1 s
    of every client command's start-up)."""
    out = subprocess.run([sys.executable, "-c", CLIENT.format(model=str(shipped_model))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [], out.stdout


def test_status_line_running_complete_stalled_cancelled():
    assert status_line(INFO, NOW) == (f"job {'j' * 32}: running, 250/1000 done, 3 errors, "
                                      "125 images/s, ETA 6 s")
    done = {**INFO, "done": 1000, "eta_s": None, "complete": True, "dead_chunks": 2}
    assert status_line(done, NOW) == (f"job {'j' * 32}: complete, 1000/1000 done, 3 errors, "
                                      "2 chunks dead-lettered, 125 images/s, ETA -")
    stalled = status_line({**INFO, "last": NOW - 600}, NOW)
    assert f"stalled since {_clock(NOW - 600)} (600 s without a result" in stalled
    assert stalled.endswith("ETA -")  # no guess
    cancelled = status_line({**INFO, "cancelled": NOW - 5}, NOW)
    assert cancelled.startswith(f"job {'j' * 32}: cancelled at {_clock(NOW - 5)}, 250/1000 done")


def test_job_rows_say_state_and_age():
    assert job_row(INFO, NOW) == f"{'j' * 32}  running          250/1000          2 min old"
    assert " stalled " in job_row({**INFO, "last": NOW - 600}, NOW)
    assert " cancelled " in job_row({**INFO, "cancelled": NOW}, NOW)


def test_chunker_splits_by_count_and_bytes_and_keeps_unreadable_items_as_errors(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"x" * 10)
    (tmp_path / "5-big.png").write_bytes(b"x" * 200)
    def found():
        return found_in(find_entries([str(tmp_path)]), 100, False)

    chunker = Chunker(found(), "c" * 32, SubmitOptions(chunk_size=10, max_chunk_bytes=25))
    chunks = list(chunker)
    assert [[i.index for i in c.items] for c in chunks] == [[0, 1, 2], [3, 4]]  # 30 B >= 25 B
    assert [c.chunk for c in chunks] == [0, 1]
    assert [len(c.items) for c in Chunker(found(), "c" * 32, SubmitOptions(chunk_size=2))] \
        == [2, 2, 1]
    assert chunker.total == 6
    assert [(e["index"], e["error"]) for e in chunker.errors] == \
        [(5, "image too large: 200 bytes; the limit is 100")]


def test_a_published_chunk_holds_its_images_in_base64_once(redis_url):
    """In Redis a chunk's message is its msgpack body (the images as bytes) in base64 inside
    kombu's JSON envelope: 4/3 of the image bytes. Images base64-encoded into a JSON body
    that kombu then base64-encodes would make it 16/9 (1.78x)."""
    import base64
    import json
    import os

    import redis

    from digitscan.worker.celeryapp import make_app
    from digitscan.worker.client import publish
    from digitscan.worker.messages import CONTENT_TYPE, Chunk, Item, unpack
    from digitscan.worker.settings import Settings

    images = [os.urandom(10_000) for _ in range(16)]
    chunk = Chunk("ab" * 16, 0, tuple(Item(i, f"{i}.png", data=d) for i, d in enumerate(images)))
    settings = Settings(broker_url=redis_url, queue="bytes-test")
    publish(make_app(settings), settings.queue, chunk.to_message())
    (stored,) = redis.Redis.from_url(redis_url).lrange("bytes-test", 0, -1)
    ratio = len(stored) / sum(map(len, images))
    assert 1.33 < ratio < 1.40, ratio
    envelope = json.loads(stored)
    assert envelope["content-type"] == CONTENT_TYPE
    body = unpack(base64.b64decode(envelope["body"]))
    assert [item["data"] for item in body[0][0]["items"]] == images


def test_a_published_chunk_names_itself_to_monitoring_without_its_images(redis_url):
    """Celery's argsrepr (what task events, Flower and logs show for the arguments) names
    the job, the chunk and its image count. Left to Celery it was the first 1,024
    characters of the chunk's base64, walked out of the whole chunk on every publish."""
    import base64
    import json

    import redis

    from digitscan.worker.celeryapp import make_app
    from digitscan.worker.client import publish
    from digitscan.worker.messages import Chunk, Item
    from digitscan.worker.settings import Settings

    settings = Settings(broker_url=redis_url, queue="argsrepr-test")
    app = make_app(settings)
    chunk = Chunk("ef" * 16, 3, (Item(0, "0.png", data=b"\x89PNG-zero"), Item(1, "1.png", data=b"one")))
    publish(app, settings.queue, chunk.to_message())
    client = redis.Redis.from_url(redis_url)
    (stored,) = client.lrange(settings.queue, 0, -1)
    headers = json.loads(stored)["headers"]
    assert headers["argsrepr"] == f"(job {'ef' * 16} chunk 3: 2 images)"
    assert base64.b64encode(b"\x89PNG-zero").decode() not in json.dumps(headers)
    app.close()
    client.delete(settings.queue)


def test_publishing_a_chunk_subscribes_to_nothing(redis_url):
    """The task writes its results itself; Celery's result channel for a chunk would only
    cost a SUBSCRIBE when it is sent and an UNSUBSCRIBE when its AsyncResult is collected."""
    import gc

    import redis

    from digitscan.worker.celeryapp import make_app
    from digitscan.worker.client import publish
    from digitscan.worker.messages import Chunk, Item
    from digitscan.worker.settings import Settings

    client = redis.Redis.from_url(redis_url)
    settings = Settings(broker_url=redis_url, result_backend=redis_url, queue="subscribe-test")
    app = make_app(settings)

    def subscribes() -> int:  # the server is the session's: count this test's calls only
        stats = client.info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("subscribe", "unsubscribe"))

    before = subscribes()
    for n in range(3):
        publish(app, settings.queue, Chunk("cd" * 16, n, (Item(0, "0.png", data=b"x"),)).to_message())
    gc.collect()
    assert client.llen("subscribe-test") == 3  # the test sees what it checks: all were sent
    assert subscribes() == before
    app.close()
    client.delete("subscribe-test")


def test_drained_results_come_back_in_input_order_whatever_order_they_were_stored(redis_url, tmp_path):
    """Chunks finish in any order, and a chunk can be stored twice (a redelivery): the
    client's spill file gives each image's last result once, in input order; names that are
    not UTF-8 or not ASCII come back as they went in."""
    import os

    from digitscan.worker.client import Drain
    from digitscan.worker.results import result_line
    from digitscan.worker.store import ResultStore

    store, job = ResultStore.from_url(redis_url, ttl=600), "d" * 32
    sources = [f"{i}.png" for i in range(10)]
    sources[3], sources[7] = os.fsdecode(b"caf\xe9.png"), "ünïcødé.png"
    rows = [result_line(job, i, s, "f" * 64, digit=i % 10, confidence=0.5) for i, s in enumerate(sources)]
    drain = Drain(store, job, tmp_path)
    assert list(drain.lines()) == []  # nothing spilled yet
    for chunk in ([8, 9], [0, 1, 2], [5, 6, 7], [3, 4], [0, 1, 2]):
        store.write_results(job, [rows[i] for i in chunk], chunk=chunk[0])
        drain.take()
    assert [line["source"] for line in drain.lines()] == sources
    assert list(drain.lines()) == rows  # twice: the spill stays readable
    drain.close()
