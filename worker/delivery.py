"""What a worker does with one delivery of a chunk: the at-least-once policy as plain
functions over a ``ResultStore``, so it is tested without Celery.

A chunk whose results are all stored is skipped (a redelivery after a lost ack); a chunk
delivered more than ``max_deliveries`` times without finishing (its worker died on each)
is dead-lettered: every image gets an error result and the queue moves on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from digitscan.errors import DeadLettered
from digitscan.worker.messages import Chunk
from digitscan.worker.results import error_line
from digitscan.worker.store import ResultStore


@dataclass(frozen=True)
class Outcome:
    state: str  # "done" | "skipped" | "dead-lettered"
    images: int = 0
    errors: int = 0
    reason: str = ""


def dead_letter_lines(chunk: Chunk, deliveries: int) -> tuple[str, list[dict]]:
    """The reason and one error line per item, for a chunk that killed its worker each time."""
    error = DeadLettered(f"chunk {chunk.chunk} was delivered {deliveries} times and its worker "
                         "died each time")
    return str(error), [error_line(chunk.job, item.index, item.source, error)
                        for item in chunk.items]


def handle_chunk(chunk: Chunk, store: ResultStore, classify: Callable[[Chunk], list[dict]],
                 max_deliveries: int) -> Outcome:
    """Skip, dead-letter, or classify and store ``chunk``; Redis errors propagate (transient)."""
    if store.is_done(chunk.job, chunk.chunk):
        return Outcome("skipped")
    attempt = store.start_attempt(chunk.job, chunk.chunk)
    if attempt > max_deliveries:
        reason, lines = dead_letter_lines(chunk, attempt - 1)
        store.dead_letter(chunk.job, chunk.chunk, lines, reason)
        return Outcome("dead-lettered", len(lines), len(lines), reason)
    results = classify(chunk)
    store.write_results(chunk.job, results, chunk=chunk.chunk)
    return Outcome("done", len(results), sum(1 for r in results if r["error"]))
