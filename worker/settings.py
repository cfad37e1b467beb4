"""Worker and client settings: frozen dataclasses, built once at an entry point.

``Settings.from_env`` is called only by entry points (the CLI, the ``celery -A`` module);
everything below them receives a ``Settings`` or a ``Limits`` as an argument.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, fields
from pathlib import Path

from digitscan.devices import check_device
from digitscan.errors import ConfigError

ENV_PREFIX = "DIGITSCAN_"
MAX_IMAGE_BYTES = 32 * 1024 * 1024
# Far below Pillow's 89 MP warning: a digit cell never needs more.
MAX_PIXELS = 16_000_000
IMAGE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Limits:
    """What one image may cost a worker: bytes, decoded pixels, seconds."""

    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_PIXELS
    timeout_s: float = IMAGE_TIMEOUT_S  # decode + normalise; 0 = unbounded


# Chunk size from `make bench` (bench/worker_bench.py, 2 cores): scan reaches 0.86-0.90 of
# the no-queue ceiling from 128 up and its best images/s at 256; smaller chunks pay more
# per-message overhead, larger ones spread a job less evenly over many workers.
DEFAULT_CHUNK_SIZE = 256
# A chunk also closes at this many bytes, so large scans never make huge messages.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
# Chunks of one job in flight at once (published, results not yet stored): Redis holds at
# most this many chunks of a job (~13 MB of 28x28 PNGs at 256 per chunk), and a job
# queued behind it waits for at most this many. Keep it above twice the pool's processes
# so no worker waits for work: 64 feeds 32 processes.
DEFAULT_WINDOW = 64


@dataclass(frozen=True)
class SubmitOptions:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    by_reference: bool = False
    # Local files over this many bytes go by reference, smaller ones inline (None: as
    # by_reference says). Only for workers that see the submitter's files: scan's own.
    reference_above: int | None = None
    max_chunk_bytes: int = MAX_CHUNK_BYTES
    window: int = DEFAULT_WINDOW
    # Digits whose calibrated probability is below this get review: true (None: the
    # worker's setting, else its model card's threshold).
    review_below: float | None = None
    # Which files inside folders, archives and URL prefixes to take (inputs.Selection).
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"--chunk-size must be >= 1, got {self.chunk_size}.")
        if self.window < 1:
            raise ConfigError(f"--window must be >= 1 chunk, got {self.window}.")
        if self.reference_above is not None and self.reference_above < 0:
            raise ConfigError(f"reference_above must be a byte count >= 0, got "
                              f"{self.reference_above}.")
        if self.review_below is not None and not 0 <= self.review_below <= 1:
            raise ConfigError(f"--review-below must be a probability from 0 to 1, got "
                              f"{self.review_below}.")


def default_model(provider: str = "auto", folder: str | Path | None = None) -> str:
    """The model shipped with the package (models/ in a checkout, installed as package data),
    so a worker or a scan needs no --model in any folder: its int8 variant where onnxruntime's
    CPU provider runs it, int8 was measured faster on such a CPU (native int8, or AVX2:
    devices.int8_pays; or the CPU does not say) and the card records that it passed the int8
    gate (the same accuracy within noise on every population: README), else the fp32 file,
    which is also what the CUDA provider runs."""
    from importlib.resources import files

    from digitscan.devices import cuda_offered, int8_pays
    from digitscan.modelcard import int8_stands_in

    folder = Path(folder) if folder is not None else Path(str(files("digitscan.models")))
    fp32, int8 = folder / "digits.onnx", folder / "digits.int8.onnx"
    if provider == "cuda" or (provider == "auto" and cuda_offered()):
        return str(fp32)
    return str(int8 if int8_pays() is not False and int8_stands_in(int8) else fp32)


@dataclass(frozen=True)
class Settings:
    broker_url: str = "redis://localhost:6379/0"
    # Where per-image results live; defaults to the broker's Redis.
    result_backend: str = ""
    model: str = ""  # empty: the model shipped in the package (default_model())
    provider: str = "auto"  # auto | cpu | cuda
    queue: str = "digitscan"
    # onnxruntime intra-op threads per process; 0 = cores // concurrency.
    threads: int = 0
    concurrency: int = 0  # 0 = number of cores
    task_time_limit: int = 300  # seconds for one chunk, hard
    # Redis redelivers an unacked message after this long; must exceed the time limit
    # or a slow chunk would run twice in parallel.
    visibility_timeout: int = 3600
    result_ttl: int = 7 * 24 * 3600  # seconds results stay in Redis
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_PIXELS
    # A chunk delivered this many times without finishing (its worker died each time) is
    # dead-lettered: its images get error results and the queue moves on.
    max_deliveries: int = 3
    # Every this many seconds a reconciler (one worker of the pool, and each waiting
    # client for its job) re-sends chunks that were lost: pending, yet neither queued nor
    # running. At most max_requeues times per chunk; then its images get error results.
    repair_after: int = 30
    max_requeues: int = 3
    # Each image gets at most this long to decode and normalise (0 = no bound).
    image_timeout: float = IMAGE_TIMEOUT_S
    # Flag digits below this calibrated probability for review; -1: the model card's choice.
    review_below: float = -1.0
    # CA bundle that signs the Redis server's certificate, for rediss:// URLs
    # (default: the system's CAs). Certificates are always verified.
    tls_ca: str = ""
    # Serve Prometheus metrics for this worker's whole pool on this port (0: none).
    metrics_port: int = 0
    # Celery task events (sent, received, started, succeeded: what Flower and `celery
    # events` show), 1 or 0. A scan's own workers on its own Redis send none: nobody can
    # watch them, and each event is a publish to Redis (3.6 % of the CPU samples of a scan of
    # 60,000 PNGs; its wall time moved less than the noise).
    task_events: int = 1

    def __post_init__(self) -> None:
        check_device(self.provider, "provider")
        if not self.model:  # frozen, so set once here: children get the resolved path
            object.__setattr__(self, "model", default_model(self.provider))
        check_redis_url(self.broker_url, "broker URL")
        if self.result_backend:
            check_redis_url(self.result_backend, "result backend URL")
        if self.visibility_timeout <= self.task_time_limit:
            raise ConfigError(
                f"visibility_timeout ({self.visibility_timeout} s) must be longer than "
                f"task_time_limit ({self.task_time_limit} s), or Redis redelivers chunks that are "
                f"still running. Raise {ENV_PREFIX}VISIBILITY_TIMEOUT or lower "
                f"{ENV_PREFIX}TASK_TIME_LIMIT."
            )
        if self.review_below != -1 and not 0 <= self.review_below <= 1:
            raise ConfigError(f"{ENV_PREFIX}REVIEW_BELOW must be a probability from 0 to 1 (or -1 "
                              f"for the model card's threshold), got {self.review_below}.")
        for name in ("max_image_bytes", "max_pixels", "result_ttl", "task_time_limit"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be > 0, got {getattr(self, name)}.")

    @property
    def limits(self) -> Limits:
        return Limits(max_bytes=self.max_image_bytes, max_pixels=self.max_pixels,
                      timeout_s=self.image_timeout)

    @property
    def results_url(self) -> str:
        return self.result_backend or self.broker_url

    def tls_options(self, url: str) -> dict:
        """redis-py/Celery TLS options for ``url``: verified certificates for rediss://."""
        if not url.startswith("rediss://"):
            return {}
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": self.tls_ca or None}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> Settings:
        """Defaults, then ``DIGITSCAN_*`` variables, then non-None ``overrides``."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            if f.type in ("int", "float"):
                kind = int if f.type == "int" else float
                try:
                    values[f.name] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not "
                                      f"{'an integer' if kind is int else 'a number'}.") from None
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def check_redis_url(url: str, what: str) -> None:
    """A URL that redis-py, kombu and Celery will all take, or a one-line ConfigError (a bare
    ``localhost:6379`` would otherwise become "No module named 'localhost'" in Celery)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{what} {redact(url)!r} is not a Redis URL; write "
                          "redis://HOST:PORT/DB (rediss:// for TLS), e.g. redis://localhost:6379/0 "
                          f"(set by --broker or {ENV_PREFIX}BROKER_URL / {ENV_PREFIX}RESULT_BACKEND).")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{what} {redact(url)!r}: the port is not a number; write "
                          "redis://HOST:PORT/DB, e.g. redis://localhost:6379/0.") from None


def redact(url: str) -> str:
    """A Redis URL without its password, for logs and messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host_port = parts.netloc.rsplit("@", 1)[-1]  # as written, even with a port that is no number
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host_port}"))
