"""The one task: decode the message, call plain functions, let Celery retry transient errors.

Settings come from the task's app (``app.conf.digitscan_settings``); the classifier and
the result store are per-process resources, created lazily after the fork.
"""

from __future__ import annotations

import redis
from celery import Task
from celery.utils.log import get_task_logger

from digitscan.errors import MalformedMessage
from digitscan.worker.celeryconfig import TASK_NAME
from digitscan.worker.classify import classify_chunk
from digitscan.worker.delivery import handle_chunk
from digitscan.worker.messages import Chunk
from digitscan.worker.settings import Settings
from digitscan.worker.store import ResultStore

log = get_task_logger(__name__)


class ChunkTask(Task):
    """Classifies one chunk of images; ``classify`` is the step a test subclass may wrap."""

    name = TASK_NAME
    autoretry_for = (redis.ConnectionError, redis.TimeoutError)
    retry_backoff = True
    retry_backoff_max = 60
    max_retries = 10
    # Pool processes of the worker that runs this task, set by the worker's start-up step,
    # so each process takes cores // processes onnxruntime threads however it was started.
    pool_processes = 0

    _classifier = None
    _store: ResultStore | None = None

    @property
    def settings(self) -> Settings:
        return self.app.conf.digitscan_settings

    @property
    def classifier(self):
        if self._classifier is None:
            # onnxruntime is imported here, in the pool process: clients that only publish
            # (and build this app to do so) never load it.
            from digitscan.worker.model import Classifier, default_threads

            s = self.settings
            threads = s.threads or default_threads(s.concurrency or self.pool_processes)
            clf = Classifier(s.model, s.provider, threads,
                             review_below=None if s.review_below < 0 else s.review_below)
            clf.warm_up()
            log.info("model %s loaded (sha256 %s, %s, %d threads)", s.model, clf.sha256[:16],
                     clf.providers[0], threads)
            self._classifier = clf
        return self._classifier

    @property
    def store(self) -> ResultStore:
        if self._store is None:
            self._store = ResultStore.for_settings(self.settings)
        return self._store

    def classify(self, chunk: Chunk) -> list[dict]:
        return classify_chunk(chunk, self.classifier, self.settings.limits)

    def run(self, message: dict) -> dict | None:
        try:
            chunk = Chunk.from_message(message)
        except MalformedMessage as exc:
            # Bad input fails fast: retrying a message that is not ours would never help.
            log.error("task %s: dropping malformed message: %s", self.request.id, exc)
            return None
        outcome = handle_chunk(chunk, self.store, self.classify, self.settings.max_deliveries)
        log.log(40 if outcome.state == "dead-lettered" else 20, "job %s chunk %d: %s, %d images, "
                "%d errors %s", chunk.job, chunk.chunk, outcome.state, outcome.images,
                outcome.errors, outcome.reason)
        return {"job": chunk.job, "chunk": chunk.chunk, "state": outcome.state,
                "images": outcome.images, "errors": outcome.errors}
