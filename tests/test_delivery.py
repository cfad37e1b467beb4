"""The at-least-once policy for one delivery, over a real Redis, without Celery."""

from __future__ import annotations

import pytest

from digitscan.worker.delivery import handle_chunk
from digitscan.worker.messages import Chunk, Item
from digitscan.worker.results import result_line
from digitscan.worker.store import ResultStore

pytestmark = pytest.mark.integration
JOB = "d" * 32
CHUNK = Chunk(JOB, 4, (Item(8, "a.png", data=b"a"), Item(9, "b.png", data=b"b")))


class Recorder:
    """A classify step that records its calls and reads every image as a 3."""

    def __init__(self):
        self.calls = 0

    def __call__(self, chunk: Chunk) -> list[dict]:
        self.calls += 1
        return [result_line(chunk.job, item.index, item.source, "m", digit=3, confidence=0.9)
                for item in chunk.items]


@pytest.fixture()
def store(redis_url) -> ResultStore:
    store = ResultStore.from_url(redis_url, ttl=600)
    store.create_job(JOB, total=10, chunks=5, meta={})
    return store


def test_first_delivery_classifies_and_stores(store):
    classify = Recorder()
    outcome = handle_chunk(CHUNK, store, classify, max_deliveries=3)
    assert (outcome.state, outcome.images, outcome.errors, classify.calls) == ("done", 2, 0, 1)
    assert store.done_chunks(JOB) == {4}
    assert [(r["index"], r["digit"]) for r in store.iter_results(JOB, 10)] == [(8, 3), (9, 3)]


def test_a_redelivery_of_a_stored_chunk_is_skipped(store):
    classify = Recorder()
    handle_chunk(CHUNK, store, classify, max_deliveries=3)
    outcome = handle_chunk(CHUNK, store, classify, max_deliveries=3)
    assert outcome.state == "skipped" and classify.calls == 1


def test_a_chunk_that_kills_its_worker_is_dead_lettered_after_max_deliveries(store):
    def dies(chunk):
        raise SystemExit("the worker died mid-chunk")  # as a SIGKILL would, from the store's view

    for _ in range(3):
        with pytest.raises(SystemExit):
            handle_chunk(CHUNK, store, dies, max_deliveries=3)
    classify = Recorder()
    outcome = handle_chunk(CHUNK, store, classify, max_deliveries=3)
    assert (outcome.state, outcome.images, outcome.errors, classify.calls) == \
        ("dead-lettered", 2, 2, 0)
    assert "delivered 3 times" in outcome.reason
    rows = list(store.iter_results(JOB, 10))
    assert [r["index"] for r in rows] == [8, 9]
    assert all(r["digit"] is None and r["error"].startswith("dead-lettered: chunk 4") for r in rows)
    assert store.dead_chunks(JOB) == {4: outcome.reason} and store.done_chunks(JOB) == {4}
    info = store.info(JOB)
    assert (info["done"], info["errors"], info["dead_chunks"]) == (2, 2, 1)


def test_the_last_allowed_delivery_still_classifies(store):
    def dies(chunk):
        raise SystemExit

    for _ in range(2):
        with pytest.raises(SystemExit):
            handle_chunk(CHUNK, store, dies, max_deliveries=3)
    assert handle_chunk(CHUNK, store, Recorder(), max_deliveries=3).state == "done"
