"""The one task: decode the message, call plain functions; ride out Redis outages in place.

Settings come from the task's app (``app.conf.digitscan_settings``); the classifier and
the result store are per-process resources, created lazily after the fork.
"""

from __future__ import annotations

import time

from celery import Task
from celery.exceptions import Reject
from celery.utils.log import get_task_logger

from digitscan.errors import InputsUnreachable, MalformedMessage, StoreUnavailable
from digitscan.worker.celeryconfig import TASK_NAME
from digitscan.worker.delivery import Hold, handle_chunk
from digitscan.worker.messages import Chunk
from digitscan.worker.settings import Settings
from digitscan.worker.store import ResultStore

log = get_task_logger(__name__)


class ChunkTask(Task):
    """Classifies one chunk of images; ``classify`` is the step a test subclass may wrap."""

    name = TASK_NAME
    # Margin under the hard time limit for the last store call and the return to the pool.
    HOLD_MARGIN_S = 20
    # A worker that cannot read by-reference inputs waits this long (doubling per failure
    # in a row, up to the cap) before it hands the chunk back, so it does not take the
    # whole queue from workers that can.
    UNREACHABLE_BACKOFF_S = (2.0, 60.0)
    _unreachable = 0
    # Pool processes of the worker that runs this task, set by the worker's start-up step,
    # so each process takes cores // processes onnxruntime threads however it was started.
    pool_processes = 0

    _classifier = None
    _store: ResultStore | None = None
    _metrics = None

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
            if self.metrics is not None:
                self.metrics.serving(clf.sha256, clf.providers[0])
        return self._classifier

    @property
    def metrics(self):
        """This pool process's Prometheus metrics (worker/metrics.py), when the worker
        serves them; None otherwise. Made after the fork, once per process."""
        if self._metrics is None and self.settings.metrics_port:
            from digitscan.worker.metrics import WorkerMetrics

            type(self)._metrics = WorkerMetrics()
        return self._metrics

    @property
    def store(self) -> ResultStore:
        if self._store is None:
            self._store = ResultStore.for_settings(self.settings)
        return self._store

    def classify(self, chunk: Chunk) -> list[dict]:
        # Imported here, not with the task: clients build this app to publish, and would
        # otherwise load the imaging stack (OpenCV, Pillow, numpy) for nothing. A worker's
        # parent imports it before its pool forks (celeryapp.VerifyModel).
        from digitscan.worker.classify import classify_chunk

        metrics = self.metrics
        lines = classify_chunk(chunk, self.classifier, self.settings.limits,
                               metrics.stage if metrics else None)
        if metrics is not None:
            metrics.results(lines)
        return lines

    def run(self, message: dict) -> dict | None:
        try:
            chunk = Chunk.from_message(message)
        except MalformedMessage as exc:
            # Bad input fails fast: retrying a message that is not ours would never help.
            log.error("task %s: dropping malformed message: %s", self.request.id, exc)
            return None
        # No Celery retries: a retry is a publish, which fails while Redis is down, and then
        # the original message is dropped. The chunk waits here instead (this process takes
        # no other work meanwhile), and only past the time limit goes back to the queue.
        hold = Hold(max(1, self.settings.task_time_limit - self.HOLD_MARGIN_S))
        started = time.perf_counter()
        try:
            outcome = handle_chunk(chunk, self.store, self.classify, self.settings.max_deliveries,
                                   hold)
        except StoreUnavailable as exc:
            log.error("job %s chunk %d: %s; returning it to the queue", chunk.job, chunk.chunk,
                      exc)
            raise Reject(str(exc), requeue=True) from None
        except InputsUnreachable as exc:
            first, cap = self.UNREACHABLE_BACKOFF_S
            pause = min(cap, first * 2 ** self._unreachable, self.settings.task_time_limit / 3)
            type(self)._unreachable += 1
            log.error("job %s chunk %d: %s; handing it back in %.0f s", chunk.job, chunk.chunk,
                      exc, pause)
            time.sleep(pause)
            raise Reject(str(exc), requeue=True) from None
        type(self)._unreachable = 0
        if self.metrics is not None:
            self.metrics.chunk(outcome.state, time.perf_counter() - started)
        log.log(40 if outcome.state == "dead-lettered" else 20, "job %s chunk %d: %s, %d images, "
                "%d errors %s", chunk.job, chunk.chunk, outcome.state, outcome.images,
                outcome.errors, outcome.reason)
        return {"job": chunk.job, "chunk": chunk.chunk, "state": outcome.state,
                "images": outcome.images, "errors": outcome.errors}
