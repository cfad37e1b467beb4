"""The Python API: enqueue jobs from an application, not only from a shell.

    from digitscan import Client
    client = Client("redis://localhost:6379/0")    # or Client(): $DIGITSCAN_BROKER_URL
    job = client.submit(["scans/", "batch.zip"])
    job2 = client.submit_bytes({"cheque-17.png": data})
    job.wait(timeout=600)
    for row in job.results(): ...                  # job, source, digit, confidence, review, error, model
    job.status(); job.cancel(); job.delete()

The same machinery as the CLI (``Submission``, ``wait``, the reconciler), with no progress
bar unless asked for and plain dicts out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import replace

from digitscan.worker.client import Submission, connect, wait
from digitscan.worker.reconcile import Reconciler
from digitscan.worker.settings import DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW, Settings, SubmitOptions
from digitscan.worker.store import ResultStore

FIELDS = ("job", "source", "digit", "confidence", "review", "error", "model")


class Client:
    """A connection to a digitscan Redis. ``Client()`` reads ``DIGITSCAN_*`` (it is an entry
    point, like the CLI); ``Client(url)`` or ``Client(settings=...)`` take them as given."""

    def __init__(self, broker_url: str | None = None, *, settings: Settings | None = None):
        if broker_url is not None and not isinstance(broker_url, str):
            raise TypeError(f"broker_url must be a str such as 'redis://localhost:6379/0', not "
                            f"{type(broker_url).__name__}")
        if settings is None:
            settings = Settings.from_env(broker_url=broker_url)
        elif broker_url is not None:
            settings = replace(settings, broker_url=broker_url)
        self.settings = settings
        self.store = connect(settings)

    def submit(self, inputs: list[str | os.PathLike], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
               by_reference: bool = False, review_below: float | None = None,
               window: int = DEFAULT_WINDOW, include: tuple[str, ...] = (),
               exclude: tuple[str, ...] = ()) -> Job:
        """Enqueue files, folders, globs, archives and URLs (``s3://bucket/prefix/``, ...);
        return once every chunk is published (at once for jobs of up to ``window`` chunks).
        ``include``/``exclude``: name patterns for files inside folders, as on the CLI."""
        if isinstance(inputs, (str, bytes, os.PathLike)):
            raise TypeError(f"inputs must be a list of paths, e.g. submit([{inputs!r}]), not a "
                            f"single {type(inputs).__name__}")
        paths = []
        for given in inputs:
            if not isinstance(given, (str, os.PathLike)):
                raise TypeError(f"each input must be a path (str or os.PathLike), not "
                                f"{type(given).__name__}: {given!r:.60}")
            paths.append(os.fspath(given))
        for patterns in (include, exclude):
            if isinstance(patterns, str):
                raise TypeError(f"include/exclude take a tuple of patterns, e.g. ({patterns!r},)")
        options = SubmitOptions(chunk_size=chunk_size, by_reference=by_reference,
                                review_below=review_below, window=window, include=tuple(include),
                                exclude=tuple(exclude))
        return self._run(Submission(self.store, self.settings, options, inputs=paths))

    def submit_bytes(self, images: Mapping[str, bytes], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     review_below: float | None = None, window: int = DEFAULT_WINDOW) -> Job:
        """Enqueue images already in memory, by name (the name is each result's source)."""
        if not isinstance(images, Mapping):
            raise TypeError(f"images must be a mapping of name -> bytes, e.g. "
                            f"{{'cheque-17.png': data}}, not {type(images).__name__}")
        for name, data in images.items():
            if not isinstance(name, str) or not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"images must map str names to bytes; got {type(name).__name__} "
                                f"-> {type(data).__name__} for {name!r:.60}")
        options = SubmitOptions(chunk_size=chunk_size, review_below=review_below, window=window)
        return self._run(Submission(self.store, self.settings, options, images=images))

    def job(self, job_id: str) -> Job:
        """A job submitted earlier (by anyone), by its id."""
        self.store.info(job_id)  # JobError if Redis does not know it
        return Job(self, job_id)

    def jobs(self) -> list[dict]:
        return self.store.jobs()

    def _run(self, submission: Submission) -> Job:
        submission.start()
        job = Job(self, submission.job, submission)
        wait(self.store, submission.job, progress=False, submission=submission,
             reconciler=job.reconciler, until_published=True)
        return job


class Job:
    def __init__(self, client: Client, job_id: str, submission: Submission | None = None):
        self.client, self.id, self._submission = client, job_id, submission
        self.reconciler = Reconciler(client.store, client.settings, job_id,
                                     app=submission.app if submission else None)

    @property
    def store(self) -> ResultStore:
        return self.client.store

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def wait(self, timeout: float | None = None, progress: bool = False) -> dict:
        """Block until every image has a result (JobError after ``timeout`` seconds, results
        kept); return the status."""
        return wait(self.store, self.id, progress=progress, timeout=timeout,
                    submission=self._submission, reconciler=self.reconciler)

    def status(self) -> dict:
        return self.store.info(self.id)

    def results(self) -> Iterator[dict]:
        """Plain dicts in input order: job, source, digit, confidence, review, error, model."""
        for row in self.store.iter_results(self.id, self.status()["total"]):
            yield {k: row[k] for k in FIELDS}

    def cancel(self) -> None:
        self.store.cancel(self.id)

    def delete(self) -> None:
        self.store.delete(self.id)
