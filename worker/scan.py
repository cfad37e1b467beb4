"""``digitscan scan``: the whole job on one machine with nothing set up beforehand."""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from digitscan.modelcard import verify_model_file
from digitscan.worker.client import Drain, Submission, connect, wait
from digitscan.worker.embedded import EmbeddedRedis, LocalWorkers
from digitscan.worker.inputs import check_inputs
from digitscan.worker.model import resolve_providers
from digitscan.worker.reconcile import Reconciler
from digitscan.worker.results import check_results_path
from digitscan.worker.settings import Settings, SubmitOptions


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

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def label_of(source: str) -> int | None:
    """The true digit, when the file sits in a folder named 0-9 (as `digitscan data --png`)."""
    parent = Path(source.rsplit(":", 1)[-1]).parent.name
    return int(parent) if len(parent) == 1 and parent.isdigit() else None


def score(out: Path) -> tuple[int, int, int, int, int]:
    """(errors, review, not digits, labelled, correct) from a results file."""
    errors = review = not_digits = labelled = correct = 0
    with open(out) as f:
        rows = (json.loads(line) for line in f) if out.suffix == ".jsonl" else None
        if rows is None:
            rows = csv.DictReader(f)
        for row in rows:
            if row["error"]:
                errors += 1
                not_digits += row["error"].startswith("not a digit")
            review += row["review"] in (True, "True")
            label = label_of(row["source"])
            if label is not None:
                labelled += 1
                correct += str(row["digit"]) == str(label)
    return errors, review, not_digits, labelled, correct


def scan(inputs: list[str], out: str, settings: Settings, workers: int = 2,
         broker: str | None = None, options: SubmitOptions = SubmitOptions(),
         progress: bool = True) -> ScanSummary:
    # Fail before starting anything if the output, inputs, model or provider is not usable.
    check_results_path(out)
    check_inputs(inputs)
    verify_model_file(settings.model)
    resolve_providers(settings.provider)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="digitscan-scan-")))
        if broker is None:
            server = stack.enter_context(EmbeddedRedis(tmp / "redis"))
            broker = server.url
        settings = replace(settings, broker_url=broker, result_backend="",
                           concurrency=workers)
        store = connect(settings)
        pool = stack.enter_context(LocalWorkers(settings.to_env(), workers, tmp / "worker.log"))
        pool.wait_ready()
        t0 = time.perf_counter()
        job = Submission(store, settings, options, inputs).start()
        reconciler = Reconciler(store, settings, job.job, app=job.app)
        drain = Drain(store, job.job)
        wait(store, job.job, progress=progress, check=pool.check, reconciler=reconciler,
             submission=job, drain=drain)
        seconds = time.perf_counter() - t0
        count = drain.write(out)
    errors, review, not_digits, labelled, correct = score(Path(out))
    return ScanSummary(job=job.job, images=count, errors=errors, seconds=seconds,
                       images_per_s=count / seconds if seconds else 0.0, review=review,
                       not_digits=not_digits, labelled=labelled, correct=correct, out=out)
