"""What a worker does with one delivery of a chunk: the at-least-once policy as plain
functions over a ``ResultStore``, so it is tested without Celery.

A chunk whose results are all stored is skipped (a redelivery after a lost ack), as is a
chunk of a cancelled or deleted job; a chunk delivered more than ``max_deliveries`` times
without finishing (its worker died on each) is dead-lettered: every image gets an error
result and the queue moves on.

Redis outages are ridden out in place by ``Hold``: the chunk stays in the worker, its
message stays unacknowledged, and nothing is published while Redis is away. Publishing a
retry instead (Celery's autoretry) fails exactly when Redis is down, and Celery then
drops the original message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from digitscan.errors import DeadLettered, InputsUnreachable, StoreUnavailable
from digitscan.worker.messages import Chunk
from digitscan.worker.results import error_line
from digitscan.worker.store import TRANSIENT, ResultStore

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    state: str  # "done" | "skipped" | "cancelled" | "unknown" | "dead-lettered"
    images: int = 0
    errors: int = 0
    reason: str = ""


class Hold:
    """Call a store operation until it succeeds, backing off while Redis is unavailable,
    for at most ``budget_s`` seconds in all; then raise ``StoreUnavailable``."""

    def __init__(self, budget_s: float, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, first_delay_s: float = 0.25,
                 max_delay_s: float = 5.0):
        self.clock, self.sleep = clock, sleep
        self.deadline = clock() + budget_s
        self.budget_s, self.first_delay_s, self.max_delay_s = budget_s, first_delay_s, max_delay_s
        self.waited = 0

    def __call__(self, operation: Callable[[], T]) -> T:
        delay = self.first_delay_s
        while True:
            try:
                return operation()
            except TRANSIENT as exc:
                if self.clock() + delay > self.deadline:
                    raise StoreUnavailable(f"Redis unavailable for {self.budget_s:.0f} s: "
                                           f"{exc}") from None
                if not self.waited:
                    log.warning("Redis unavailable (%s); holding the chunk until it is back", exc)
                self.waited += 1
                self.sleep(delay)
                delay = min(2 * delay, self.max_delay_s)


def call(operation: Callable[[], T]) -> T:
    return operation()


def dead_letter_lines(chunk: Chunk, deliveries: int) -> tuple[str, list[dict]]:
    """The reason and one error line per item, for a chunk that killed its worker each time."""
    error = DeadLettered(f"chunk {chunk.chunk} was delivered {deliveries} times and its worker "
                         "died each time")
    return str(error), [error_line(chunk.job, item.index, item.source, error)
                        for item in chunk.items]


def handle_chunk(chunk: Chunk, store: ResultStore, classify: Callable[[Chunk], list[dict]],
                 max_deliveries: int, hold: Callable[[Callable[[], T]], T] = call) -> Outcome:
    """Skip, dead-letter, or classify and store ``chunk``. Every store call goes through
    ``hold``, so an outage after classifying does not mean classifying again."""
    state = hold(lambda: store.chunk_state(chunk.job, chunk.chunk))
    if state != "todo":
        return Outcome("skipped" if state == "done" else state)
    attempt = hold(lambda: store.start_attempt(chunk.job, chunk.chunk))
    if attempt > max_deliveries:
        reason, lines = dead_letter_lines(chunk, attempt - 1)
        hold(lambda: store.dead_letter(chunk.job, chunk.chunk, lines, reason))
        return Outcome("dead-lettered", len(lines), len(lines), reason)
    try:
        results = classify(chunk)
    except InputsUnreachable:
        hold(lambda: store.undo_attempt(chunk.job, chunk.chunk))
        raise
    hold(lambda: store.write_results(chunk.job, results, chunk=chunk.chunk))
    return Outcome("done", len(results), sum(1 for r in results if r["error"]))
