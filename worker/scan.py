"""``digitscan scan``: the whole job on one machine with nothing set up beforehand."""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from digitscan import interrupts
from digitscan.errors import ConfigError
from digitscan.modelcard import verify_model_file
from digitscan.worker.embedded import EmbeddedRedis, WorkerGroup
from digitscan.worker.inputs import Skipped, SourceReader, check_inputs
from digitscan.worker.model import default_processes, resolve_providers
from digitscan.worker.results import check_results_path
from digitscan.worker.settings import Settings, SubmitOptions

# Local files over this many bytes go to scan's own workers by path, smaller ones inline. A
# file's bytes inline cost ~16 us a KB on 2 cores (base64 in kombu's envelope, Redis's queue,
# unacked and pending copies, the Celery parent's decoding and its pipe to the pool); a path
# costs ~30 us a file whatever its size (the worker's stat and open): 10,000 form cells
# (median 2.5 KB) +10 % images/s at any threshold from 0 to 4 KB, 3,334 cells of 3-46 KB
# +21-26 %, and MNIST's 300-byte PNGs 17 % slower by path than inline.
REFERENCE_ABOVE = 2048
# From this many workers on, every local file goes by path. The one client process then
# sets the pace (it read and sent each image at ~80 us on a 16-core GPU host, ~13k images/s
# at most, with a pool that had room for more), and by path it neither reads the files
# nor sends their bytes, while the pool's extra stat and open per file is spread over many
# processes: 180,000 MNIST PNGs at 16 workers, 16.1k images/s by path against 12.6k inline
# (bench/gpu_scale.sh, 2026-11-27). With 2 workers the pool is the bound: inline wins there.
BY_PATH_FROM_WORKERS = 8
# Pool processes under one Celery parent (embedded.WorkerGroup). At 16 workers on that host
# one parent (~50 us an MNIST image: a bound near 20k images/s) beat four, 14.7k against
# 12.6k images/s: each more parent cost ~4.6 s of CPU, its start-up (numpy's BLAS threads
# among it: digitscan/blasthreads.py, since). More workers than this get more parents.
POOL_PER_NODE = 16


# Workers when --workers is not given: a worker's default (one a core; a few on a GPU:
# model.default_processes), at most this many, the most measured. On a 16-core host 2
# workers read 4.3k MNIST PNGs/s where 16 read 7.6k at 60,000 images and 12.0-13.9k at
# 180,000 (bench/gpu_scale.sh, an H100 host).
DEFAULT_WORKERS = 16


def default_workers(providers: list[str], available: int | None = None) -> int:
    """scan's worker processes for a session on ``providers`` with ``available`` cores."""
    return min(default_processes(providers, available), DEFAULT_WORKERS)


def reference_above(workers: int) -> int:
    """Local files over this many bytes go to scan's ``workers`` by path."""
    return 0 if workers >= BY_PATH_FROM_WORKERS else REFERENCE_ABOVE


@dataclass(frozen=True)
class ScanSummary:
    job: str
    images: int
    errors: int
    seconds: float
    images_per_s: float
    review: int
    not_digits: int
    labelled: int
    correct: int
    out: str
    skipped: Skipped  # hidden files, __MACOSX/ and unselected files left out
    workers: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def folder_label(source: str) -> int | None:
    """The true digit, when the file sits in a folder named 0-9 (as `digitscan data --png`)."""
    parent = Path(source.rsplit(":", 1)[-1]).parent.name
    return int(parent) if len(parent) == 1 and parent.isdigit() else None


def load_labels(spec: str | None) -> Callable[[str], int | None] | None:
    """What ``--labels`` asks for: None (no accuracy is claimed), ``folders`` (the parent
    folder's name, 0-9), or a file of true digits: JSON ``{"source": digit}`` or CSV with
    ``source,digit`` columns, matched by the source as given or by its file name."""
    if spec is None:
        return None
    if spec == "folders":
        return folder_label
    path = Path(spec)
    try:
        if path.suffix == ".json":
            table = {str(k): v for k, v in json.loads(path.read_text()).items()}
        elif path.suffix == ".csv":
            with open(path, newline="") as f:
                table = {row["source"]: row["digit"] for row in csv.DictReader(f)}
        else:
            raise ConfigError(f"--labels {spec}: give `folders`, a .json or a .csv file.")
        table = {k: int(v) for k, v in table.items()}
    except OSError as exc:
        raise ConfigError(f"--labels {spec}: {exc.strerror or exc}.") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--labels {spec}: not a table of source -> digit ({exc}); JSON "
                          '{"scans/a.png": 7} or CSV with source,digit columns.') from None

    def lookup(source: str) -> int | None:
        found = table.get(source)
        return table.get(Path(source.rsplit(":", 1)[-1]).name) if found is None else found

    return lookup


@dataclass
class Tally:
    """Errors, review flags, "not a digit" answers and (with labels) right answers, counted
    as the result lines go by on their way to the results file: one pass over the results,
    not a second one after the job (0.36 s of a 60,000-image scan's client time)."""

    label_of: Callable[[str], int | None] | None = None
    errors: int = 0
    review: int = 0
    not_digits: int = 0
    labelled: int = 0
    correct: int = 0

    def __call__(self, row: dict) -> dict:
        if row["error"]:
            self.errors += 1
            self.not_digits += row["error"].startswith("not a digit")
        self.review += bool(row["review"])
        label = self.label_of(row["source"]) if self.label_of else None
        if label is not None:
            self.labelled += 1
            self.correct += row["digit"] == label
        return row


def scan(inputs: list[str], out: str, settings: Settings, workers: int | None = None,
         broker: str | None = None, options: SubmitOptions = SubmitOptions(),
         progress: bool = True, labels: str | None = None, report: str | None = None
         ) -> ScanSummary:
    # Fail before starting anything if the output, inputs, model or provider is not usable.
    check_results_path(out)
    if report:
        from digitscan.worker.report import check_report_path

        check_report_path(report)
    label_of = load_labels(labels)
    check_inputs(inputs)
    verify_model_file(settings.model)
    providers = resolve_providers(settings.provider)
    workers = workers or default_workers(providers)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="digitscan-scan-")))
        server = None
        if broker is None:
            # Spawned, not waited for: the workers start first (see below).
            server = EmbeddedRedis(tmp / "redis").spawn()
            stack.callback(server.close)
            broker = server.url
        # A queue of its own: on a shared broker, other workers (other models) on the
        # default queue must not answer this scan's chunks.
        settings = replace(settings, broker_url=broker, result_backend="",
                           concurrency=workers, queue=f"digitscan-scan-{uuid.uuid4().hex[:12]}",
                           task_events=settings.task_events if server is None else 0)
        shared = server is None
        if shared:  # someone else's Redis: say so before starting anything
            from digitscan.worker.client import connect

            store = connect(settings)
        # The workers are forked from this process (embedded.ForkedWorker): they start with
        # what it has imported (numpy, onnxruntime, the settings) and import Celery and
        # redis-py themselves, while this process imports its side (Celery, the result
        # store, the reconciler). A 10-file scan on 2 cores, 7 alternating runs each: 1.64 s
        # with a new interpreter, 1.39 s forked so, 1.41 s forked after the client's imports
        # (which the workers then share, but start later). Not once this process holds
        # connections (a shared broker's, above): a child would inherit Celery's and
        # redis-py's pools with their open sockets.
        # TMPDIR: what the workers put in a temporary folder goes in this scan's, removed with
        # it. Their Celery parent's pool makes one (billiard's pymp-*, for its shared memory)
        # that only its exit handlers would remove, and scan's workers end without them (their
        # parent leaves by os._exit, or is killed at the end): one empty folder a scan in
        # /tmp, for ever.
        pool = stack.enter_context(WorkerGroup({**settings.to_env(), "TMPDIR": str(tmp)}, workers,
                                               tmp, POOL_PER_NODE, fork=not shared))
        if server is not None:
            server.wait_ready()  # a few ms, while the workers boot
        from digitscan.worker.client import Drain, Submission, connect, wait
        from digitscan.worker.reconcile import Reconciler

        if shared:
            # On a shared broker nothing is queued before the workers are ready: chunks
            # queued for a worker that then fails to start would stay there.
            pool.wait_ready()
        else:
            store = connect(settings)
        # In its own Redis, the first window of chunks is read and queued while the workers
        # boot (~0.7 s of imports and model loading; on 2 cores it took 15 % of a
        # 10,000-cell scan's whole time). A worker that exits or never becomes ready still
        # ends the wait (``pool.check``); queued chunks are not taken for lost.
        t0 = time.perf_counter()
        if not options.by_reference and options.reference_above is None:
            options = replace(options, reference_above=reference_above(workers))
        job = Submission(store, settings, options, inputs).start()
        reconciler = Reconciler(store, settings, job.job, app=job.app)
        drain = Drain(store, job.job)
        stack.callback(drain.close)
        wait(store, job.job, progress=progress, check=pool.check, reconciler=reconciler,
             submission=job, drain=drain)
        seconds = time.perf_counter() - t0
        interrupts.check()  # stopped: no results file, not even a complete one
        tally = Tally(label_of)
        count = drain.write(out, tap=tally)
        if server is not None:
            # Every result is written and the queue lives in this scan's own Redis: nothing
            # is in flight that a warm shutdown could save (it took 2.6 of a 10-image scan's
            # 3.8 s).
            pool.stop(warm=False)
        if report:
            from digitscan.worker.report import write_report

            reader = SourceReader(settings.max_image_bytes)
            stack.callback(reader.close)
            write_report(drain.lines(), report, reader.read, settings.limits)
    return ScanSummary(job=job.job, images=count, errors=tally.errors, seconds=seconds,
                       images_per_s=count / seconds if seconds else 0.0, review=tally.review,
                       not_digits=tally.not_digits, labelled=tally.labelled,
                       correct=tally.correct, out=out, skipped=job.skipped, workers=workers)
