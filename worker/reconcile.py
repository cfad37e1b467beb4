"""Re-sending lost chunks, so a pool finishes every job on its own.

Every published chunk keeps its message in the job's ``pending`` hash until its results
are stored. A chunk that is pending but neither queued nor delivered to a worker, seen so
twice a moment apart, was lost (a Redis crash between a worker's pop and its unacked
record, an AOF that lost its last second, a failed publish, a task that failed): it is
re-sent as it was first sent, byte for byte. So a re-send never rebuilds a chunk from the
inputs as they are now, and never duplicates a backlog that is merely queued.

At most ``max_requeues`` re-sends per chunk; then its images get an error result each, so
the job still ends with exactly one result per image. Waiting clients reconcile their own
job; every worker runs ``reconcile_all`` on a timer, one at a time across the pool.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import redis

from digitscan.errors import DeadLettered
from digitscan.worker.broker import live_task_ids
from digitscan.worker.client import publish
from digitscan.worker.messages import task_id
from digitscan.worker.results import error_line
from digitscan.worker.settings import Settings
from digitscan.worker.store import ResultStore, job_key

log = logging.getLogger(__name__)
PASS_KEY = "digitscan:reconcile"  # held by the worker whose timer runs this pass
CONFIRM_S = 1.0  # a chunk must be missing from the broker twice, this far apart


def missing_chunks(store: ResultStore, broker: redis.Redis, queue: str, job: str) -> list[int]:
    """Pending chunks of ``job`` that are neither queued on ``queue`` nor unacknowledged."""
    pending = store.pending_chunks(job)
    if not pending:
        return []
    live = live_task_ids(broker, queue)
    return [c for c in pending if task_id(job, c) not in live]


def lost_chunks(store: ResultStore, broker: redis.Redis, queue: str, job: str,
                confirm_s: float = CONFIRM_S, sleep: Callable[[float], None] = time.sleep
                ) -> list[int]:
    """Chunks missing twice: a message between a worker's pop and its unacked record (a few
    microseconds) or being published right now is not taken for lost."""
    first = missing_chunks(store, broker, queue, job)
    if not first:
        return []
    sleep(confirm_s)
    again = set(missing_chunks(store, broker, queue, job))
    return [c for c in first if c in again]


def resend(store: ResultStore, app, settings: Settings, job: str, queue: str,
           chunks: list[int]) -> tuple[list[int], list[int]]:
    """Re-send ``chunks`` from their pending copies; (re-sent, given up on)."""
    resent, given_up = [], []
    for chunk in chunks:
        message = store.pending_message(job, chunk)
        if message is None:
            continue  # its results were stored meanwhile
        if store.bump_requeue(job, chunk) > settings.max_requeues:
            error = DeadLettered(f"chunk {chunk} was lost {settings.max_requeues + 1} times "
                                 "before a worker stored its results")
            lines = [error_line(job, item["i"], item["source"], error) for item in message["items"]]
            store.dead_letter(job, chunk, lines, str(error))
            log.error("job %s chunk %d: %s; its images get error results", job, chunk, error)
            given_up.append(chunk)
        else:
            publish(app, queue, message)
            resent.append(chunk)
    if resent:
        log.warning("job %s: re-sent %d lost chunks: %s", job, len(resent), resent[:20])
    return resent, given_up


def broker_client(settings: Settings, **options) -> redis.Redis:
    return redis.Redis.from_url(settings.broker_url, **settings.tls_options(settings.broker_url),
                                **options)


def reconcile_job(store: ResultStore, broker: redis.Redis, app, settings: Settings, job: str,
                  confirm_s: float = CONFIRM_S) -> list[int]:
    """Find and re-send ``job``'s lost chunks, under a per-job lock; return those re-sent."""
    queue = store.job_queue(job) or settings.queue
    lock = store.redis.lock(job_key(job, "lock"), timeout=60, blocking=False)
    if not lock.acquire():
        return []  # another reconciler is on this job right now
    try:
        lost = lost_chunks(store, broker, queue, job, confirm_s)
        return resend(store, app, settings, job, queue, lost)[0]
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def reconcile_all(store: ResultStore, broker: redis.Redis, app, settings: Settings
                  ) -> dict[str, list[int]]:
    """One pass over every running job, by one worker of the pool per ``repair_after``."""
    if not store.redis.set(PASS_KEY, 1, nx=True, ex=max(1, settings.repair_after)):
        return {}
    out = {}
    for info in store.jobs():
        if not info["complete"] and info["cancelled"] is None:
            resent = reconcile_job(store, broker, app, settings, info["job"])
            if resent:
                out[info["job"]] = resent
    return out


class Reconciler:
    """A waiting client's reconciler for one job: a pass every ``repair_after`` seconds."""

    def __init__(self, store: ResultStore, settings: Settings, job: str, app=None):
        from digitscan.worker.celeryapp import make_app

        self.store, self.settings, self.job = store, settings, job
        self.app = app or make_app(settings)
        self.broker = broker_client(settings)
        self.last = time.monotonic()
        self.resent = 0

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.settings.repair_after

    def repair(self) -> list[int]:
        self.last = time.monotonic()
        resent = reconcile_job(self.store, self.broker, self.app, self.settings, self.job)
        self.resent += len(resent)
        return resent
