"""The client side of a job: submit, wait, status, results. No onnxruntime needed."""

from __future__ import annotations

import csv
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from tqdm import tqdm

from digitscan.errors import BrokerError, ConfigError, JobError
from worker.app import make_app
from worker.celeryconfig import TASK_NAME
from worker.inputs import count_items, find_entries, read_items
from worker.messages import Chunk, Item
from worker.settings import Settings, redact
from worker.store import ResultStore

log = logging.getLogger(__name__)

RESULT_FIELDS = ("job", "source", "digit", "confidence", "error", "model")
# Chunk size from `make bench` (bench/worker_bench.py): throughput is flat from 64 up,
# and smaller chunks spread a job more evenly over many workers.
DEFAULT_CHUNK_SIZE = 64
# A chunk also closes at this many bytes, so large scans never make huge messages.
MAX_CHUNK_BYTES = 8 * 1024 * 1024


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
    store = ResultStore.from_url(settings.results_url, settings.result_ttl)
    try:
        store.redis.ping()
    except redis.RedisError as exc:
        reason = str(exc).rstrip(".")
        raise BrokerError(f"cannot reach Redis at {redact(settings.results_url)}: {reason}. Start "
                          "Redis or pass --broker / set DIGITSCAN_BROKER_URL.") from None
    return store


def submit(inputs: list[str], settings: Settings, options: SubmitOptions = SubmitOptions(),
           store: ResultStore | None = None) -> Submitted:
    """Split the inputs into chunks and enqueue them; return the job id at once."""
    entries = find_entries(inputs)
    total = sum(count_items(e) for e in entries)
    if total == 0:
        raise ConfigError(f"no files found in {', '.join(inputs)}; nothing was submitted.")
    store = store or connect(settings)
    app = make_app(settings)
    job = uuid.uuid4().hex
    store.create_job(job, total, 0, {"inputs": inputs, "by_reference": options.by_reference})

    index, chunk_no, pending, pending_bytes, local = 0, 0, [], 0, []

    def publish() -> None:
        nonlocal chunk_no, pending, pending_bytes
        chunk = Chunk(job, chunk_no, tuple(pending))
        app.send_task(TASK_NAME, args=[chunk.to_message()], task_id=chunk.task_id,
                      queue=settings.queue)
        chunk_no, pending, pending_bytes = chunk_no + 1, [], 0

    for entry in entries:
        for found in read_items(entry, settings.max_image_bytes, options.by_reference):
            if found.error:
                # Known before any worker sees it: record the error result right here.
                local.append({"index": index, "job": job, "source": found.source, "digit": None,
                              "confidence": None, "error": found.error, "model": None})
            else:
                pending.append(Item(index, found.source, data=found.data, path=found.path))
                pending_bytes += len(found.data or b"")
                if len(pending) >= options.chunk_size or pending_bytes >= options.max_chunk_bytes:
                    publish()
            index += 1
    if pending:
        publish()
    store.write_results(job, local)
    store.set_counts(job, total=index, chunks=chunk_no)
    if index != total:
        log.warning("job %s: inputs changed while submitting: %d items, not %d", job, index, total)
    log.info("job %s submitted: %d images in %d chunks", job, index, chunk_no)
    return Submitted(job, index, chunk_no)


def wait(store: ResultStore, job: str, *, progress: bool = True, timeout: float | None = None,
         poll_s: float = 0.5, check: Callable[[], None] | None = None) -> dict:
    """Block until every item of ``job`` has a result; ``check`` may raise to abort."""
    start = time.monotonic()
    info = store.info(job)
    with tqdm(total=info["total"], unit="img", desc=f"job {job[:8]}", disable=not progress,
              leave=False) as bar:
        while True:
            info = store.info(job)
            bar.update(info["done"] - bar.n)
            if info["complete"]:
                return info
            if check is not None:
                check()
            if timeout is not None and time.monotonic() - start > timeout:
                raise JobError(f"job {job} has {info['done']}/{info['total']} results after "
                               f"{timeout:.0f} s; are workers running? `digitscan status {job}` "
                               "shows progress, results are kept.")
            store.wait_for_progress(job, poll_s)


def write_results(store: ResultStore, job: str, out: str | Path) -> int:
    """Write one line per image, in input order, as .jsonl or .csv; return the count."""
    out = Path(out)
    if out.suffix not in (".jsonl", ".csv"):
        raise ConfigError(f"--out {out} must end in .jsonl or .csv.")
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
    return (f"job {info['job']}: {state}, {info['done']}/{info['total']} done, "
            f"{info['errors']} errors, {info['rate']:.0f} images/s, ETA {eta}")
