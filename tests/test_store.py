"""Integration: results in a real Redis (private server on a free port)."""

import pytest
import redis

from digitscan.errors import JobError
from digitscan.worker.store import ResultStore, errors_key, job_key, results_key

pytestmark = pytest.mark.integration
JOB = "f" * 32


def line(i, error=None):
    return {"index": i, "job": JOB, "source": f"{i}.png", "digit": None if error else i % 10,
            "confidence": None if error else 0.9, "error": error, "model": "m"}


def test_writes_are_idempotent_per_item(redis_url):
    store = ResultStore.from_url(redis_url, ttl=600)
    store.create_job(JOB, total=3, chunks=1, meta={})
    store.write_results(JOB, [line(0), line(1, "corrupt image: x")])
    store.write_results(JOB, [line(0), line(1, "corrupt image: x")])  # redelivered chunk
    info = store.info(JOB)
    assert (info["done"], info["errors"], info["complete"]) == (2, 1, False)
    store.write_results(JOB, [line(1), line(2)])  # a retry that now succeeds
    info = store.info(JOB)
    assert (info["done"], info["errors"], info["complete"]) == (3, 0, True)
    assert [r["index"] for r in store.iter_results(JOB, 3)] == [0, 1, 2]


def test_every_key_has_the_ttl(redis_url):
    store = ResultStore.from_url(redis_url, ttl=600)
    store.create_job(JOB, total=1, chunks=1, meta={"inputs": ["x"]})
    store.write_results(JOB, [line(0, "bad")])
    client = redis.Redis.from_url(redis_url)
    for key in (job_key(JOB), results_key(JOB), errors_key(JOB)):
        assert 0 < client.ttl(key) <= 600


def test_unknown_job_is_a_clear_error(redis_url):
    with pytest.raises(JobError, match="job 0+ is unknown"):
        ResultStore.from_url(redis_url, ttl=60).info("0" * 32)


def test_a_job_hash_recreated_by_a_late_write_is_not_a_job(redis_url):
    """After a Redis restart without persistence a worker's write re-creates the job hash
    with timestamps only; the reconciler must still see the job as lost and re-create it."""
    store = ResultStore.from_url(redis_url, ttl=600)
    store.write_results(JOB, [line(0)], chunk=0)
    assert not store.exists(JOB)
    store.create_job(JOB, total=1, chunks=1, meta={})
    assert store.exists(JOB) and store.info(JOB)["complete"]


def test_bitmap_writes_set_exactly_the_bits_of_their_items(redis_url):
    """Result writes set ``seen``/``errors`` bits a run of consecutive items at a time
    (BITFIELD SET u1..u63): the same bitmap as one SETBIT per item, for items in and out of
    order, with gaps and repeats, runs longer than 63, set and cleared over each other."""
    import random

    from digitscan.worker.store import _bits

    r = redis.Redis.from_url(redis_url)
    rng = random.Random(0)
    for trial in range(200):
        r.delete("bits-test-a", "bits-test-b")
        for _ in range(5):
            start = rng.randrange(0, 2000)
            items = [i for i in range(start, start + rng.randrange(1, 400)) if rng.random() > 0.1]
            items = (items or [start]) + rng.sample(items or [start], min(3, len(items or [start])))
            rng.shuffle(items)
            value = rng.randrange(2)
            r.execute_command(*_bits("bits-test-a", items, value))
            with r.pipeline() as p:
                for i in items:
                    p.setbit("bits-test-b", i, value)
                p.execute()
        assert r.get("bits-test-a") == r.get("bits-test-b"), trial
    # A chunk's 256 consecutive items: 5 SETs, not 256.
    assert len(_bits("k", list(range(256, 512)), 1)) == 2 + 4 * 5
    r.delete("bits-test-a", "bits-test-b")
