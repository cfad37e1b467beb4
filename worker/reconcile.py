"""Re-sending lost chunks: a message lost in Redis, or a Redis that restarted without
persistence, leaves chunks that no worker will ever take. The reconciler finds the chunks
without results once the job has been silent past a deadline and sends them again, at most
``max_requeues`` times each. Chunks are rebuilt from the job's recorded inputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict

from digitscan.errors import JobError
from digitscan.worker.celeryapp import make_app
from digitscan.worker.client import Chunker, SubmitOptions, publish
from digitscan.worker.inputs import find_entries
from digitscan.worker.settings import Settings
from digitscan.worker.store import ResultStore

log = logging.getLogger(__name__)


def choose_chunks(chunks: Iterable[int], done: Collection[int], requeues: Mapping[int, int],
                  max_requeues: int) -> tuple[list[int], list[int]]:
    """(chunks to re-send, chunks given up on): every chunk not done is re-sent unless it
    was already re-sent ``max_requeues`` times."""
    resend, given_up = [], []
    for chunk in chunks:
        if chunk in done:
            continue
        (given_up if requeues.get(chunk, 0) >= max_requeues else resend).append(chunk)
    return resend, given_up


class Reconciler:
    def __init__(self, store: ResultStore, settings: Settings, job: str, inputs: list[str],
                 options: SubmitOptions, total: int):
        self.store, self.settings, self.job = store, settings, job
        self.inputs, self.options, self.total = inputs, options, total
        self.last_repair = time.time()
        self.resent = 0

    @classmethod
    def for_job(cls, store: ResultStore, settings: Settings, job: str) -> Reconciler:
        info = store.info(job)
        submission = store.submission(job)
        if submission is None:
            raise JobError(f"job {job} has no recorded inputs; it cannot be repaired.")
        inputs, options = submission
        return cls(store, settings, job, inputs, SubmitOptions(**options), info["total"])

    def due(self, info: dict | None, deadline_s: float) -> bool:
        """True when the job has had no new result for ``deadline_s`` seconds."""
        last = max(self.last_repair, info["last"] if info else 0.0)
        return time.time() - last >= deadline_s

    def repair(self) -> list[int]:
        """Re-send every chunk without results (recreating a job Redis forgot); return them."""
        self.last_repair = time.time()
        if not self.store.exists(self.job):
            log.warning("job %s: Redis lost the job; re-creating it from its inputs", self.job)
            self.store.create_job(self.job, self.total, 0,
                                  {"inputs": self.inputs, "options": asdict(self.options)})
        chunker = Chunker(find_entries(self.inputs), self.job, self.settings.max_image_bytes,
                          self.options)
        chunks = {c.chunk: c for c in chunker}
        plan = self.store.plan(self.job)
        resend, given_up = choose_chunks(sorted(plan) if plan else sorted(chunks),
                                         self.store.done_chunks(self.job),
                                         self.store.requeue_counts(self.job),
                                         self.settings.max_requeues)
        for chunk in given_up:
            log.error("job %s chunk %d: re-sent %d times already; giving up on it", self.job,
                      chunk, self.settings.max_requeues)
        app = make_app(self.settings)
        resent = []
        for number in resend:
            if number not in chunks:
                continue  # the inputs changed since submission; nothing to rebuild it from
            self.store.bump_requeue(self.job, number)
            publish(app, self.settings, chunks[number])
            resent.append(number)
        if not plan:
            self.store.record_plan(self.job, {c.chunk: (c.items[0].index, len(c.items))
                                              for c in chunks.values()})
            self.store.set_counts(self.job, total=chunker.total, chunks=len(chunks))
        self.store.write_results(self.job, chunker.errors)  # unreadable items, if Redis forgot
        self.resent += len(resent)
        if resent:
            log.warning("job %s: re-sent %d chunks with no results: %s", self.job, len(resent),
                        resent[:20])
        return resent
