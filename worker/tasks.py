"""Thin tasks: decode the message, call plain functions, store, handle retries."""

from __future__ import annotations

import redis
from celery import Task
from celery.utils.log import get_task_logger

from digitscan.worker import faults
from digitscan.worker.app import app, settings
from digitscan.worker.celeryconfig import TASK_NAME
from digitscan.worker.classify import classify_chunk, result_line
from digitscan.worker.imaging import Limits
from digitscan.worker.messages import Chunk, MalformedMessage
from digitscan.worker.store import ResultStore

log = get_task_logger(__name__)


class ChunkTask(Task):
    """Holds the per-process classifier and store, created lazily after the fork."""

    _classifier = None
    _store = None

    @property
    def classifier(self):
        if self._classifier is None:
            from digitscan.worker.model import Classifier, default_threads

            threads = settings.threads or default_threads(settings.concurrency or 0)
            clf = Classifier(settings.model, settings.provider, threads)
            clf.warm_up()
            log.info("model %s loaded (sha256 %s, %s, %d threads)", settings.model,
                     clf.sha256[:16], clf.providers[0], threads)
            type(self)._classifier = clf
        return self._classifier

    @property
    def store(self) -> ResultStore:
        if self._store is None:
            type(self)._store = ResultStore.for_settings(settings)
        return self._store


LIMITS = Limits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_pixels,
                timeout_s=settings.image_timeout)


@app.task(bind=True, base=ChunkTask, name=TASK_NAME,
          autoretry_for=(redis.ConnectionError, redis.TimeoutError),
          retry_backoff=True, retry_backoff_max=60, max_retries=10)
def classify_chunk_task(self, message: dict) -> dict | None:
    try:
        chunk = Chunk.from_message(message)
    except MalformedMessage as exc:
        # Bad input fails fast: retrying a message that is not ours would never help.
        log.error("task %s: dropping malformed message: %s", self.request.id, exc)
        return None
    store = self.store
    if store.is_done(chunk.job, chunk.chunk):
        # A redelivery of a chunk whose results are stored (its ack was lost): nothing to do.
        log.info("job %s chunk %d: already done, skipping", chunk.job, chunk.chunk)
        return None
    attempt = store.start_attempt(chunk.job, chunk.chunk)
    if attempt > settings.max_deliveries:
        reason = (f"dead-lettered: chunk {chunk.chunk} was delivered {attempt - 1} times and its "
                  "worker died each time")
        store.dead_letter(chunk.job, chunk.chunk, [
            result_line(chunk.job, item.index, item.source, None, error=reason)
            for item in chunk.items], reason)
        log.error("job %s chunk %d: %s", chunk.job, chunk.chunk, reason)
        return None
    faults.inject(chunk)
    results = classify_chunk(chunk, self.classifier, LIMITS)
    store.write_results(chunk.job, results, chunk=chunk.chunk)
    errors = sum(1 for r in results if r["error"])
    log.info("job %s chunk %d: %d images, %d errors", chunk.job, chunk.chunk, len(results), errors)
    return {"job": chunk.job, "chunk": chunk.chunk, "images": len(results), "errors": errors}
