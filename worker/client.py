"""The client side of a job: chunk the inputs, submit, wait, report. No onnxruntime needed.

The reconciler that re-sends lost chunks lives in ``reconcile``; the result line and its
files in ``results``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from tqdm import tqdm

from digitscan.errors import BrokerError, ConfigError, JobError
from digitscan.worker.celeryapp import make_app
from digitscan.worker.celeryconfig import TASK_NAME
from digitscan.worker.inputs import Entry, count_items, find_entries, read_items
from digitscan.worker.messages import Chunk, Item
from digitscan.worker.results import error_line, write_result_file
from digitscan.worker.settings import Settings, SubmitOptions, redact
from digitscan.worker.store import ResultStore

if TYPE_CHECKING:
    from digitscan.worker.reconcile import Reconciler

log = logging.getLogger(__name__)
PLAN_FLUSH = 500  # chunks between writes of the job's chunk plan to Redis


@dataclass(frozen=True)
class Submitted:
    job: str
    total: int
    chunks: int


def connect(settings: Settings) -> ResultStore:
    store = ResultStore.for_settings(settings)
    try:
        store.redis.ping()
    except redis.RedisError as exc:
        reason = str(exc).rstrip(".")
        raise BrokerError(f"cannot reach Redis at {redact(settings.results_url)}: {reason}. Start "
                          "Redis or pass --broker / set DIGITSCAN_BROKER_URL.") from None
    return store


class Chunker:
    """Turns inputs into chunks, deterministically: the same inputs give the same chunks,
    so a missing chunk can be rebuilt later by running it again. Items that cannot even
    be read here become error results in ``errors``; ``total`` counts every item."""

    def __init__(self, entries: list[Entry], job: str, max_image_bytes: int,
                 options: SubmitOptions):
        self.entries, self.job, self.max_image_bytes, self.options = \
            entries, job, max_image_bytes, options
        self.errors: list[dict] = []
        self.total = 0

    def __iter__(self) -> Iterator[Chunk]:
        pending: list[Item] = []
        size = chunk_no = 0
        for entry in self.entries:
            for found in read_items(entry, self.max_image_bytes, self.options.by_reference):
                if found.error:
                    self.errors.append(error_line(self.job, self.total, found.source, found.error))
                else:
                    pending.append(Item(self.total, found.source, data=found.data, path=found.path))
                    size += len(found.data or b"")
                    if len(pending) >= self.options.chunk_size or size >= self.options.max_chunk_bytes:
                        yield Chunk(self.job, chunk_no, tuple(pending), self.options.review_below)
                        pending, size, chunk_no = [], 0, chunk_no + 1
                self.total += 1
        if pending:
            yield Chunk(self.job, chunk_no, tuple(pending), self.options.review_below)


def publish(app, settings: Settings, chunk: Chunk) -> None:
    app.send_task(TASK_NAME, args=[chunk.to_message()], task_id=chunk.task_id, queue=settings.queue)


def submit(inputs: list[str], settings: Settings, options: SubmitOptions = SubmitOptions(),
           store: ResultStore | None = None, entries: list[Entry] | None = None) -> Submitted:
    """Split the inputs into chunks and enqueue them; return the job id at once.
    ``entries``: ``find_entries(inputs)`` if the caller already checked the inputs."""
    entries = find_entries(inputs) if entries is None else entries
    total = sum(count_items(e) for e in entries)
    if total == 0:
        raise ConfigError(f"no files found in {', '.join(inputs)}; nothing was submitted.")
    store = store or connect(settings)
    app = make_app(settings)
    job = uuid.uuid4().hex
    store.create_job(job, total, 0, {"inputs": inputs, "options": asdict(options)})
    chunker = Chunker(entries, job, settings.max_image_bytes, options)
    plan: dict[int, tuple[int, int]] = {}
    for chunk in chunker:
        publish(app, settings, chunk)
        plan[chunk.chunk] = (chunk.items[0].index, len(chunk.items))
        if len(plan) % PLAN_FLUSH == 0:
            store.record_plan(job, plan)
    store.record_plan(job, plan)
    store.write_results(job, chunker.errors)
    store.set_counts(job, total=chunker.total, chunks=len(plan))
    if chunker.total != total:
        log.warning("job %s: inputs changed while submitting: %d items, not %d", job,
                    chunker.total, total)
    log.info("job %s submitted: %d images in %d chunks", job, chunker.total, len(plan))
    return Submitted(job, chunker.total, len(plan))


def wait(store: ResultStore, job: str, *, progress: bool = True, timeout: float | None = None,
         poll_s: float = 0.5, check: Callable[[], None] | None = None,
         reconciler: Reconciler | None = None, repair_after: float | None = None) -> dict:
    """Block until every item of ``job`` has a result; ``check`` may raise to abort. With a
    ``reconciler``, chunks silent for ``repair_after`` seconds are re-sent."""
    start = time.monotonic()
    total = reconciler.total if reconciler else store.info(job)["total"]
    with tqdm(total=total, unit="img", desc=f"job {job[:8]}", disable=not progress,
              leave=False) as bar:
        while True:
            try:
                info = store.info(job)
            except JobError:
                if reconciler is None:
                    raise
                info = None  # Redis forgot the job; the reconciler re-creates it when due
            except redis.ConnectionError:
                info = None  # Redis restarting; the client reconnects on the next call
            if info is not None:
                bar.update(info["done"] - bar.n)
                if info["complete"]:
                    return info
            if check is not None:
                check()
            if reconciler is not None and repair_after is not None \
                    and reconciler.due(info, repair_after):
                with contextlib.suppress(redis.ConnectionError):
                    reconciler.repair()
            if timeout is not None and time.monotonic() - start > timeout:
                done = info["done"] if info else "?"
                raise JobError(f"job {job} has {done}/{total} results after {timeout:.0f} s; are "
                               f"workers running? `digitscan status {job}` shows progress, "
                               "results are kept.")
            try:
                store.wait_for_progress(job, poll_s)
            except redis.ConnectionError:
                time.sleep(poll_s)


def write_results(store: ResultStore, job: str, out: str | Path) -> int:
    """Write ``job``'s result lines, in input order, to ``out`` (.jsonl or .csv)."""
    info = store.info(job)
    return write_result_file(store.iter_results(job, info["total"]), out)


def status_line(info: dict) -> str:
    eta = f"{info['eta_s']:.0f} s" if info["eta_s"] is not None else "-"
    state = "complete" if info["complete"] else "running"
    dead = f", {info['dead_chunks']} chunks dead-lettered" if info["dead_chunks"] else ""
    return (f"job {info['job']}: {state}, {info['done']}/{info['total']} done, "
            f"{info['errors']} errors{dead}, {info['rate']:.0f} images/s, ETA {eta}")
