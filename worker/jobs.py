"""The client side of a job: submit, wait, status, results. No onnxruntime needed."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from tqdm import tqdm

from digitscan.errors import BrokerError, ConfigError, JobError
from digitscan.worker.app import make_app
from digitscan.worker.celeryconfig import TASK_NAME
from digitscan.worker.inputs import Entry, count_items, find_entries, read_items
from digitscan.worker.messages import Chunk, Item
from digitscan.worker.settings import Settings, redact
from digitscan.worker.store import ResultStore

log = logging.getLogger(__name__)

RESULT_FIELDS = ("job", "source", "digit", "confidence", "error", "model")
# Chunk size from `make bench` (bench/worker_bench.py, 2 cores): scan reaches 0.86-0.90 of
# the no-queue ceiling from 128 up and its best images/s at 256; smaller chunks pay more
# per-message overhead, larger ones spread a job less evenly over many workers.
DEFAULT_CHUNK_SIZE = 256
# A chunk also closes at this many bytes, so large scans never make huge messages.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
PLAN_FLUSH = 500  # chunks between writes of the job's chunk plan to Redis


@dataclass(frozen=True)
class SubmitOptions:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    by_reference: bool = False
    max_chunk_bytes: int = MAX_CHUNK_BYTES

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"--chunk-size must be >= 1, got {self.chunk_size}.")


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
                    self.errors.append({"index": self.total, "job": self.job,
                                        "source": found.source, "digit": None,
                                        "confidence": None, "error": found.error, "model": None})
                else:
                    pending.append(Item(self.total, found.source, data=found.data, path=found.path))
                    size += len(found.data or b"")
                    if len(pending) >= self.options.chunk_size or size >= self.options.max_chunk_bytes:
                        yield Chunk(self.job, chunk_no, tuple(pending))
                        pending, size, chunk_no = [], 0, chunk_no + 1
                self.total += 1
        if pending:
            yield Chunk(self.job, chunk_no, tuple(pending))


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


class Reconciler:
    """Finds chunks that have no results past a deadline (a message lost in Redis, or a
    Redis that restarted without persistence) and sends them again, at most
    ``max_requeues`` times each. Chunks are rebuilt from the job's inputs."""

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
        plan = self.store.plan(self.job)
        missing = set(self.store.missing_chunks(self.job)) if plan else None
        app = make_app(self.settings)
        resent, new_plan = [], {}
        for chunk in chunker:
            new_plan[chunk.chunk] = (chunk.items[0].index, len(chunk.items))
            if missing is not None and chunk.chunk not in missing:
                continue
            if not self.store.is_done(self.job, chunk.chunk):
                if self.store.bump_requeue(self.job, chunk.chunk) > self.settings.max_requeues:
                    log.error("job %s chunk %d: re-sent %d times already; giving up on it",
                              self.job, chunk.chunk, self.settings.max_requeues)
                    continue
                publish(app, self.settings, chunk)
                resent.append(chunk.chunk)
        if not plan:
            self.store.record_plan(self.job, new_plan)
            self.store.set_counts(self.job, total=chunker.total, chunks=len(new_plan))
        self.store.write_results(self.job, chunker.errors)
        self.resent += len(resent)
        if resent:
            log.warning("job %s: re-sent %d chunks with no results: %s", self.job, len(resent),
                        resent[:20])
        return resent


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


def check_results_path(out: str | Path) -> Path:
    """Refuse a results file name before any work is done, not after."""
    out = Path(out)
    if out.suffix not in (".jsonl", ".csv"):
        raise ConfigError(f"--out {out} must end in .jsonl or .csv.")
    return out


def write_results(store: ResultStore, job: str, out: str | Path) -> int:
    """Write one line per image, in input order, as .jsonl or .csv; return the count."""
    out = check_results_path(out)
    info = store.info(job)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    count = 0
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, RESULT_FIELDS, extrasaction="ignore") if out.suffix == ".csv" \
            else None
        if writer:
            writer.writeheader()
        for line in store.iter_results(job, info["total"]):
            row = {k: line.get(k) for k in RESULT_FIELDS}
            if writer:
                writer.writerow(row)
            else:
                f.write(json.dumps(row) + "\n")
            count += 1
    tmp.replace(out)
    return count


def status_line(info: dict) -> str:
    eta = f"{info['eta_s']:.0f} s" if info["eta_s"] is not None else "-"
    state = "complete" if info["complete"] else "running"
    dead = f", {info['dead_chunks']} chunks dead-lettered" if info["dead_chunks"] else ""
    return (f"job {info['job']}: {state}, {info['done']}/{info['total']} done, "
            f"{info['errors']} errors{dead}, {info['rate']:.0f} images/s, ETA {eta}")
