"""The client side of a job: chunk the inputs, submit, wait, report. No onnxruntime needed.

The reconciler that re-sends lost chunks lives in ``reconcile``; the result line and its
files in ``results``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import mmap
import os
import tempfile
import time
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from tqdm import tqdm

from digitscan import interrupts
from digitscan.errors import BrokerError, ChangedSinceSubmission, ConfigError, ImageTooLarge, JobError
from digitscan.worker import storage
from digitscan.worker.celeryapp import make_app
from digitscan.worker.celeryconfig import TASK_NAME
from digitscan.worker.inputs import (
    EVERYTHING,
    Entry,
    Found,
    Selection,
    Skipped,
    check_inputs,
    count_items,
    iter_entries,
    read_items,
)
from digitscan.worker.messages import Chunk, Item, task_id
from digitscan.worker.results import error_line, write_result_file
from digitscan.worker.settings import Settings, SubmitOptions, redact
from digitscan.worker.store import TRANSIENT, ResultStore, unpack

if TYPE_CHECKING:
    from digitscan.worker.reconcile import Reconciler

log = logging.getLogger(__name__)


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


def found_in(entries: Iterable[Entry], max_bytes: int, by_reference: bool,
             select: Selection = EVERYTHING, reference_above: int | None = None
             ) -> Iterator[Found]:
    """Every item of ``entries``, read (or, by reference, located)."""
    for entry in entries:
        yield from read_items(entry, max_bytes, by_reference, select, reference_above)


def found_in_memory(images: Mapping[str, bytes], max_bytes: int) -> Iterator[Found]:
    """Images the caller already holds (``Client.submit_bytes``), by name."""
    for name, data in images.items():
        if len(data) > max_bytes:
            yield Found(name, error=ImageTooLarge(f"{len(data)} bytes; the limit is {max_bytes}"))
        else:
            yield Found(name, data=bytes(data))


class Chunker:
    """Turns items into chunks, deterministically: the same items give the same chunks.
    Items that cannot even be read here become error results in ``errors`` (the caller
    drains it); ``total`` counts every item.

    ``fingerprints`` gets one number per item (size and CRC-32 of its bytes, or the file
    size for --by-reference); given ``verify=True`` it is checked instead, and an item that
    changed since the first pass becomes an error result rather than another file's answer.
    """

    def __init__(self, found: Iterable[Found], job: str, options: SubmitOptions,
                 first_chunk: int = 0, fingerprints: array | None = None, verify: bool = False):
        self.found, self.job, self.options = found, job, options
        self.first_chunk = first_chunk
        self.fingerprints = array("Q") if fingerprints is None else fingerprints
        self.verify = verify
        self.errors: list[dict] = []
        self.total = 0

    def _check(self, found: Found) -> Found:
        mark = _fingerprint(found)
        if self.total >= len(self.fingerprints):  # first read of this item
            self.fingerprints.append(mark)
        elif self.verify and self.fingerprints[self.total] != mark:
            return Found(found.source, error=ChangedSinceSubmission(
                "the file is not what was first submitted; submit it again as a new job"))
        return found

    def __iter__(self) -> Iterator[Chunk]:
        pending: list[Item] = []
        size, chunk_no = 0, self.first_chunk
        for found in self.found:
            found = self._check(found)
            if found.error:
                self.errors.append(error_line(self.job, self.total, found.source, found.error))
            else:
                pending.append(Item(self.total, found.source, data=found.data, path=found.path,
                                    size=found.size))
                size += len(found.data or b"")
                if len(pending) >= self.options.chunk_size or size >= self.options.max_chunk_bytes:
                    yield Chunk(self.job, chunk_no, tuple(pending), self.options.review_below)
                    pending, size, chunk_no = [], 0, chunk_no + 1
            self.total += 1
        if pending:
            yield Chunk(self.job, chunk_no, tuple(pending), self.options.review_below)


def _fingerprint(found: Found) -> int:
    if found.error:
        return 0
    if found.data is None:
        return found.size or 0
    return (len(found.data) << 32) | zlib.crc32(found.data)


class Submission:
    """Streams one job into Redis: at most ``options.window`` chunks in flight (published,
    results not yet stored), refilled as chunks complete, so Redis holds O(window) image
    bytes at any job size, and a small job queued behind a big one waits for one window,
    not for the whole big job.

    The job is recorded (``start``) before its first chunk is published, so an interrupted
    submission can still be cancelled or deleted. Each chunk's message is kept in the job's
    pending hash until its results are stored: what a reconciler re-sends.
    """

    def __init__(self, store: ResultStore, settings: Settings, options: SubmitOptions,
                 inputs: list[str] | None = None, images: Mapping[str, bytes] | None = None):
        self.skipped = Skipped()  # hidden files, __MACOSX/ and unselected files left out
        if images is not None:  # already in memory (the Python API's submit_bytes)
            if options.by_reference:
                raise ConfigError("images held in memory cannot be sent by reference.")
            self.total = len(images)
            self._found = lambda: found_in_memory(images, settings.max_image_bytes)
            inputs = [f"<{len(images)} images in memory>"]
        else:
            check_inputs(inputs)
            # Listed twice, lazily (a count, then the chunks), never held: the client's
            # memory does not grow with the number of files. Clutter is named in `skipped`.
            select = Selection(options.include, options.exclude)
            self.total = sum(count_items(e, self.skipped, select)
                             for e in iter_entries(inputs, self.skipped, select))
            self._found = lambda: found_in(iter_entries(inputs, select=select),
                                           settings.max_image_bytes, options.by_reference, select,
                                           options.reference_above)
        if self.total == 0:
            raise ConfigError(f"no files found in {', '.join(inputs)}; nothing was submitted.")
        self.store, self.settings, self.options, self.inputs = store, settings, options, inputs
        self.job = uuid.uuid4().hex
        self.app = make_app(settings)
        self.fingerprints: array = array("Q")
        self.next_chunk = 0
        self.finished = False

    def _meta(self) -> dict:
        return {"inputs": [_absolute(i) for i in self.inputs], "options": asdict(self.options),
                "queue": self.settings.queue}

    def start(self) -> Submission:
        self.store.create_job(self.job, self.total, 0, self._meta())
        self._begin(verify=False)
        return self

    def restart(self) -> None:
        """Redis lost the job (a restart without persistence): record it again and send every
        item again, checked against what was first read. Chunk numbers go on from where
        they were, so a late result of an old chunk never marks a new one done."""
        log.warning("job %s: Redis lost the job; sending it again from its inputs", self.job)
        self.store.create_job(self.job, self.total, 0, self._meta())
        self._begin(verify=True)

    def _begin(self, verify: bool) -> None:
        self.chunker = Chunker(self._found(), self.job, self.options, self.next_chunk,
                               self.fingerprints, verify)
        self._chunks = iter(self.chunker)
        self._next: Chunk | None = None
        self.finished = False

    def pump(self) -> int:
        """Publish chunks while the window has room; return how many were published."""
        if self.finished:
            return 0
        if self.store.cancelled(self.job):
            self.finished = True
            return 0
        in_flight, sent = self.store.in_flight(self.job), 0
        while in_flight < self.options.window:
            if self._next is None:
                self._next = next(self._chunks, None)
                if self._next is None:
                    self._finish()
                    break
            chunk = self._next
            message = chunk.to_message()
            in_flight = self.store.add_pending(self.job, chunk.chunk, message)
            publish(self.app, self.settings.queue, message)
            self._next, self.next_chunk, sent = None, chunk.chunk + 1, sent + 1
            self._drain_errors()
        return sent

    def _drain_errors(self) -> None:
        if self.chunker.errors:
            self.store.write_results(self.job, self.chunker.errors)
            self.chunker.errors = []

    def _finish(self) -> None:
        self._drain_errors()
        self.store.set_counts(self.job, total=self.chunker.total, chunks=self.next_chunk)
        if self.chunker.total != self.total:
            log.warning("job %s: inputs changed while submitting: %d items, not %d", self.job,
                        self.chunker.total, self.total)
            self.total = self.chunker.total
        self.finished = True
        log.info("job %s submitted: %d images in %d chunks", self.job, self.total,
                 self.next_chunk)


def _absolute(given: str) -> str:
    """An input as recorded with its job: local paths made absolute (URLs and the
    "<N images in memory>" of the Python API kept as they are)."""
    return given if storage.is_url(given) or given.startswith("<") else os.path.abspath(given)


def publish(app, queue: str, message: dict) -> None:
    """Send one chunk's message; its task id is ``job:chunk``, whoever sends it."""
    # ignore_result: the task writes its results per image, and Celery's own result is never
    # stored (task_ignore_result); without it, send_task SUBSCRIBEs to the chunk's result
    # channel and the AsyncResult's finaliser UNSUBSCRIBEs: two round trips a chunk for nothing.
    # argsrepr: what monitoring shows for the arguments. Celery would otherwise walk the
    # whole chunk to build its first 1,024 characters of repr (a third of the publish's CPU
    # when the images were base64) and ship them in every message's headers.
    app.send_task(TASK_NAME, args=[message], queue=queue, ignore_result=True,
                  task_id=task_id(message["job"], message["chunk"]),
                  argsrepr=f"(job {message['job']} chunk {message['chunk']}: "
                           f"{len(message['items'])} images)", kwargsrepr="{}")


def submit(inputs: list[str], settings: Settings, options: SubmitOptions = SubmitOptions(),
           store: ResultStore | None = None, on_created: Callable[[str], None] | None = None,
           check: Callable[[], None] | None = None) -> Submitted:
    """Record a job and publish all of its chunks, a window at a time; return when the last
    one is published (at once for a job that fits in the window). ``on_created`` gets the
    job id before the first chunk is sent."""
    store = store or connect(settings)
    submission = Submission(store, settings, options, inputs).start()
    if on_created is not None:
        on_created(submission.job)
    wait(store, submission.job, progress=False, check=check, submission=submission,
         until_published=True)
    return Submitted(submission.job, submission.total, submission.next_chunk)


def wait(store: ResultStore, job: str, *, progress: bool = True, timeout: float | None = None,
         poll_s: float = 0.5, check: Callable[[], None] | None = None,
         reconciler: Reconciler | None = None, submission: Submission | None = None,
         until_published: bool = False, drain: Drain | None = None) -> dict:
    """Block until every item of ``job`` has a result (or, ``until_published``, until the
    ``submission`` has published its last chunk); ``check`` may raise to abort. A
    ``submission`` is pumped as its window frees up; a ``reconciler`` re-sends lost chunks
    every ``repair_after`` seconds; a ``drain`` takes stored results out of Redis as they
    come. Redis outages and a full Redis are waited out."""
    start = time.monotonic()
    total = submission.total if submission else store.info(job)["total"]
    outage: str | None = None
    with tqdm(total=total, unit="img", desc=f"job {job[:8]}", disable=not progress,
              leave=False) as bar:
        while True:
            info = None
            try:
                info = store.info(job)
                if drain is not None:
                    drain.take()  # first: it frees Redis memory the window may need
                if submission is not None:
                    submission.pump()
                if reconciler is not None and reconciler.due():
                    reconciler.repair()
                outage = None
            except JobError:
                if submission is None:
                    raise
                if store.was_deleted(job):
                    raise JobError(f"job {job} was deleted (`digitscan delete`) while it ran; "
                                   "nothing more is sent.") from None
                with contextlib.suppress(*TRANSIENT):
                    submission.restart()
            except TRANSIENT as exc:
                if outage is None:
                    log.warning("Redis unavailable or full (%s); waiting", exc)
                outage = str(exc)
            if info is not None:
                bar.total = info["total"]
                bar.update(info["done"] - bar.n)
                finished = submission is None or submission.finished
                if until_published and finished:
                    return info
                if finished and (info["complete"] or info["cancelled"] is not None):
                    return info
            if check is not None:
                check()
            interrupts.check()
            if timeout is not None and time.monotonic() - start > timeout:
                done = info["done"] if info else "?"
                why = f"; Redis: {outage}" if outage else "; are workers running?"
                raise JobError(f"job {job} has {done}/{total} results after {timeout:.0f} s{why} "
                               f"`digitscan status {job}` shows progress, results are kept.")
            try:
                store.wait_for_progress(job, poll_s)
            except TRANSIENT:
                time.sleep(poll_s)


class Drain:
    """A waiting client's share of the job's results: taken out of Redis as chunks are
    stored (``take``, from ``wait``), kept in an unnamed temporary file, and written in
    input order at the end (``write``). So Redis holds a moment's results, not the job's,
    and the client holds 8 bytes per image (the file offsets), not the results.

    Drained results are no longer in Redis: `digitscan results` cannot read them again.
    """

    def __init__(self, store: ResultStore, job: str, spill_dir: str | Path | None = None):
        self.store, self.job = store, job
        self.spill = tempfile.TemporaryFile(dir=spill_dir)
        self.offsets = array("q")
        self.models: dict[str, str] = {}

    def take(self) -> int:
        """Move what Redis holds now into the spill file; return how many results. They are
        spilled as Redis packs them (one JSON line each) and unpacked once, by ``lines``."""
        taken = 0
        while packed := self.store.drain(self.job):
            self.spill.seek(0, io.SEEK_END)
            for index, raw in packed.items():
                index = int(index)
                if index >= len(self.offsets):
                    self.offsets.extend([-1] * (index + 1 - len(self.offsets)))
                self.offsets[index] = self.spill.tell()
                self.spill.write(raw + b"\n")
            taken += len(packed)
            self.models.update(self.store.models(self.job))
        return taken

    def lines(self) -> Iterator[dict]:
        self.spill.flush()
        if not self.spill.seek(0, io.SEEK_END):
            return  # nothing spilled (mmap refuses an empty file)
        # Mapped, not seek-and-readline: each seek drops the file object's buffer and the
        # next readline reads 8 KB again, for every line (a third of this loop's time).
        with mmap.mmap(self.spill.fileno(), 0, access=mmap.ACCESS_READ) as spilled:
            for index, offset in enumerate(self.offsets):
                if offset >= 0:
                    line = spilled[offset : spilled.find(b"\n", offset)]
                    yield unpack(self.job, index, line, self.models)

    def write(self, out: str | Path, tap: Callable[[dict], dict] | None = None) -> int:
        """Write every result drained so far, in input order, to ``out``; return the count.
        ``tap`` sees each line on its way (and returns it). The lines stay readable
        (``lines``) until ``close``."""
        self.take()
        return write_result_file(map(tap, self.lines()) if tap else self.lines(), out)

    def close(self) -> None:
        self.spill.close()


def write_results(store: ResultStore, job: str, out: str | Path) -> int:
    """Write ``job``'s result lines, in input order, to ``out`` (.jsonl or .csv)."""
    info = store.info(job)
    return write_result_file(store.iter_results(job, info["total"]), out)


STALL_S = 60  # a running job with no new result for this long is reported as stalled


def status_line(info: dict, now: float | None = None) -> str:
    """One line: state, counts, rate and ETA. A job with no result for ``STALL_S`` says
    since when, and gives no ETA: it would be a guess."""
    now = time.time() if now is None else now
    dead = f", {info['dead_chunks']} chunks dead-lettered" if info["dead_chunks"] else ""
    counts = f"{info['done']}/{info['total']} done, {info['errors']} errors{dead}"
    if info.get("cancelled") is not None:
        return (f"job {info['job']}: cancelled at {_clock(info['cancelled'])}, {counts}; the "
                "results so far are kept")
    quiet = now - (info.get("last") or info.get("created") or now)
    if info["complete"]:
        state, eta = "complete", "-"
    elif quiet >= STALL_S:
        state = (f"stalled since {_clock(now - quiet)} ({quiet:.0f} s without a result; are "
                 "workers running?)")
        eta = "-"
    else:
        state = "running"
        eta = f"{info['eta_s']:.0f} s" if info["eta_s"] is not None else "-"
    return f"job {info['job']}: {state}, {counts}, {info['rate']:.0f} images/s, ETA {eta}"


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def job_row(info: dict, now: float | None = None) -> str:
    """One line of `digitscan jobs`: id, state, done/total, age."""
    now = time.time() if now is None else now
    if info.get("cancelled") is not None:
        state = "cancelled"
    elif info["complete"]:
        state = "complete"
    else:
        quiet = now - (info.get("last") or info.get("created") or now)
        state = "stalled" if quiet >= STALL_S else "running"
    age = now - info["created"]
    age_s = f"{age / 3600:.1f} h" if age >= 3600 else f"{age / 60:.0f} min" if age >= 60 \
        else f"{age:.0f} s"
    return f"{info['job']}  {state:<9}  {info['done']:>9}/{info['total']:<9}  {age_s:>8} old"
