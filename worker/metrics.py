"""Operators' metrics: Prometheus, from every pool process of a worker, on one port.

With ``DIGITSCAN_METRICS_PORT`` set, a worker's main process serves ``/metrics`` over HTTP.
The pool processes do the work, so they record it: prometheus_client's multi-process mode
has each of them write its samples to files in a folder of the worker's own, and the main
process sums the files at each scrape (counts of a pool process that died stay counted).

prometheus_client picks its multi-process storage when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``: so the folder is made and the variable set in the main process
before the pool forks (``prepare``, on Celery's ``celeryd_init``), and nothing imports
prometheus_client before that.

Series:
  digitscan_images_total{outcome}      digit | review | the error kind (not a digit, corrupt image, ...)
  digitscan_stage_seconds{stage}       read, decode, normalise: per image; model: per chunk's batch
  digitscan_chunk_seconds{state}       one chunk, message to stored results (done, skipped, ...)
  digitscan_model_info{sha256,provider}  1 for the model each pool process serves
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from digitscan.errors import ConfigError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Image stages take ~10 µs to ~10 ms; a chunk's model batch and a whole chunk up to seconds.
STAGE_BUCKETS = (2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5)
CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def prepare() -> Path:
    """In the worker's main process, before the pool forks: a fresh folder for the pool's
    samples, named in the environment the pool processes inherit."""
    folder = Path(tempfile.mkdtemp(prefix="digitscan-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


class Exporter:
    """The main process's HTTP endpoint, summing what every pool process recorded."""

    def __init__(self, port: int, folder: Path):
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        self.folder = folder
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))
        try:
            self.server, self.thread = start_http_server(port, registry=registry)
        except OSError as exc:
            raise ConfigError(f"DIGITSCAN_METRICS_PORT {port}: cannot serve metrics "
                              f"({exc.strerror or exc}); another worker on this host may hold "
                              "it: give each worker a port of its own.") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.folder, ignore_errors=True)


def outcome_of(line: dict) -> str:
    """A result line's outcome label: a bounded set, whatever the images are."""
    if line["error"]:
        return line["error"].split(":", 1)[0]
    return "review" if line["review"] else "digit"


class WorkerMetrics:
    """What one pool process records; created once per process, after the fork."""

    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.images = Counter("digitscan_images_total", "Images classified, by outcome: digit, "
                              "review, or the error kind", ["outcome"])
        self.stages = Histogram("digitscan_stage_seconds", "Seconds in each stage: read, decode "
                                "and normalise per image; model per chunk's batch", ["stage"],
                                buckets=STAGE_BUCKETS)
        self.chunks = Histogram("digitscan_chunk_seconds", "Seconds to handle one chunk, from "
                                "its message to its stored results, by final state", ["state"],
                                buckets=CHUNK_BUCKETS)
        self.model = Gauge("digitscan_model_info", "The model a worker serves (value 1)",
                           ["sha256", "provider"], multiprocess_mode="max")

    def stage(self, name: str, seconds: float) -> None:
        self.stages.labels(name).observe(seconds)

    def results(self, lines: list[dict]) -> None:
        for line in lines:
            self.images.labels(outcome_of(line)).inc()

    def chunk(self, state: str, seconds: float) -> None:
        self.chunks.labels(state).observe(seconds)

    def serving(self, sha256: str, provider: str) -> None:
        self.model.labels(sha256, provider).set(1)
