"""The reconciler over a real Redis, with real Celery publishing and a real kombu consumer:
it re-sends exactly the chunks that are pending yet neither queued nor unacknowledged."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from kombu import Connection

from digitscan.worker.broker import live_task_ids, queued
from digitscan.worker.celeryapp import make_app
from digitscan.worker.messages import Chunk, Item, unpack
from digitscan.worker.reconcile import lost_chunks, reconcile_all, reconcile_job
from digitscan.worker.settings import Settings
from digitscan.worker.store import ResultStore

pytestmark = pytest.mark.integration
JOB = "e" * 32
QUEUE = "recon"


def chunk(n: int) -> Chunk:
    return Chunk(JOB, n, (Item(2 * n, f"{n}a.png", data=b"a"), Item(2 * n + 1, f"{n}b.png",
                                                                      data=b"b")))


@pytest.fixture()
def setup(redis_url):
    settings = Settings(broker_url=redis_url, queue=QUEUE, max_requeues=2)
    store = ResultStore.from_url(redis_url, ttl=600)
    store.create_job(JOB, total=8, chunks=4, meta={"queue": QUEUE})
    app = make_app(settings)
    for n in range(4):  # four chunks published and pending, no worker running
        store.add_pending(JOB, n, chunk(n).to_message())
        app.send_task("digitscan.classify_chunk", args=[chunk(n).to_message()], queue=QUEUE,
                      task_id=chunk(n).task_id)
    return settings, store, app, redis.Redis.from_url(redis_url)


def take_one_unacked(url: str) -> None:
    """A real kombu consumer takes a message and does not ack it, as a busy worker does."""
    with Connection(url) as conn:
        channel = conn.default_channel
        message = channel.basic_get(QUEUE, no_ack=False)
        assert message is not None
        channel.qos._delivered.clear()  # leave it in Redis's unacked hash when we close


def test_live_ids_cover_the_queue_and_the_unacked_hash(setup, redis_url):
    _, _, _, client = setup
    assert live_task_ids(client, QUEUE) == {f"{JOB}:{n}" for n in range(4)}
    take_one_unacked(redis_url)
    assert queued(client, QUEUE) == 3 and client.hlen("unacked") == 1
    assert live_task_ids(client, QUEUE) == {f"{JOB}:{n}" for n in range(4)}


def test_a_queued_backlog_is_never_re_sent(setup):
    settings, store, app, client = setup
    for _ in range(3):  # as a waiting client with no worker running would, again and again
        assert reconcile_job(store, client, app, settings, JOB, confirm_s=0) == []
    assert queued(client, QUEUE) == 4


def test_lost_messages_are_re_sent_as_they_were(setup, redis_url):
    settings, store, app, client = setup
    take_one_unacked(redis_url)  # chunk 0: delivered, running somewhere; not lost
    client.lpop(QUEUE)  # chunk 3 (the newest): lost, as in a Redis crash
    store.write_results(JOB, [{"index": 2, "error": None}], chunk=1)  # chunk 1: done
    assert lost_chunks(store, client, QUEUE, JOB, confirm_s=0) == [3]
    assert reconcile_job(store, client, app, settings, JOB, confirm_s=0) == [3]
    raw = client.lrange(QUEUE, 0, -1)
    bodies = [json.loads(m) for m in raw]
    assert [b["headers"]["id"] for b in bodies].count(f"{JOB}:3") == 1
    # Byte for byte what was first sent, not rebuilt from the inputs as they are now.
    assert store.pending_message(JOB, 3) == chunk(3).to_message()
    assert reconcile_job(store, client, app, settings, JOB, confirm_s=0) == []


def test_a_pending_copy_kept_as_json_by_the_version_before_is_re_sent(setup):
    """A job submitted before chunks were msgpack, still running across the upgrade: its
    pending copies are JSON with the images in base64, and a re-send carries the same
    images (as bytes, in today's format)."""
    settings, store, app, client = setup
    old = {**chunk(3).to_message(),
           "items": [{"i": 6, "source": "3a.png", "data": base64.b64encode(b"a").decode()},
                     {"i": 7, "source": "3b.png", "data": base64.b64encode(b"b").decode()}]}
    client.hset(f"digitscan:job:{JOB}:pending", 3, json.dumps(old))
    client.delete(QUEUE)
    assert reconcile_job(store, client, app, settings, JOB, confirm_s=0) == [0, 1, 2, 3]
    sent = {}
    for raw in client.lrange(QUEUE, 0, -1):
        envelope = json.loads(raw)
        (message,), _, _ = unpack(base64.b64decode(envelope["body"]))
        sent[message["chunk"]] = Chunk.from_message(message)
    assert sent[3] == chunk(3)


def test_a_chunk_lost_too_often_gets_error_results(setup):
    settings, store, app, client = setup
    for _ in range(settings.max_requeues + 1):
        client.delete(QUEUE)
        reconcile_job(store, client, app, settings, JOB, confirm_s=0)
    assert store.pending_chunks(JOB) == []
    assert store.info(JOB)["done"] == 8 and store.info(JOB)["errors"] == 8
    row = next(store.iter_results(JOB, 8))
    assert row["source"] == "0a.png" and "lost 3 times" in row["error"]


def test_one_pass_per_interval_across_the_pool(setup):
    settings, store, app, client = setup
    client.delete(QUEUE)
    assert reconcile_all(store, client, app, settings) == {JOB: [0, 1, 2, 3]}
    client.delete(QUEUE)
    assert reconcile_all(store, client, app, settings) == {}  # another worker's pass is due
    assert queued(client, QUEUE) == 0


def test_cancelled_jobs_are_not_reconciled(setup):
    settings, store, app, client = setup
    client.delete(QUEUE)
    store.cancel(JOB)
    assert store.pending_chunks(JOB) == []
    assert reconcile_all(store, client, app, settings) == {}
