"""Per-image results in Redis, keyed by (job, item index).

    digitscan:job:<id>          hash: total, chunks, created, first, last, model, ...
    digitscan:job:<id>:results  hash: item index -> result line (JSON)
    digitscan:job:<id>:errors   hash: item index -> 1, for items whose result is an error
    digitscan:job:<id>:events   list: one entry per stored chunk, so waiters wake at once

HSET by index makes writes idempotent: a redelivered chunk overwrites its own results
instead of adding new ones. Every key carries the result TTL, refreshed on each write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import redis

from digitscan.errors import JobError

PREFIX = "digitscan:job:"
READ_BATCH = 2000


def job_key(job: str) -> str:
    return PREFIX + job


def results_key(job: str) -> str:
    return f"{PREFIX}{job}:results"


def errors_key(job: str) -> str:
    return f"{PREFIX}{job}:errors"


def events_key(job: str) -> str:
    return f"{PREFIX}{job}:events"


class ResultStore:
    def __init__(self, client: redis.Redis, ttl: int):
        self.redis = client
        self.ttl = ttl

    @classmethod
    def from_url(cls, url: str, ttl: int) -> ResultStore:
        return cls(redis.Redis.from_url(url), ttl)

    def create_job(self, job: str, total: int, chunks: int, meta: dict) -> None:
        fields = {"total": total, "chunks": chunks, "created": time.time(),
                  **{k: json.dumps(v) for k, v in meta.items()}}
        with self.redis.pipeline() as p:
            p.hset(job_key(job), mapping=fields)
            p.expire(job_key(job), self.ttl)
            p.execute()

    def set_counts(self, job: str, total: int, chunks: int) -> None:
        self.redis.hset(job_key(job), mapping={"total": total, "chunks": chunks})

    def write_results(self, job: str, results: list[dict]) -> None:
        """Store result lines (each with its ``index``) in one transaction."""
        if not results:
            return
        now = time.time()
        lines = {r["index"]: json.dumps({k: v for k, v in r.items() if k != "index"})
                 for r in results}
        errors = {r["index"]: 1 for r in results if r.get("error")}
        oks = [r["index"] for r in results if not r.get("error")]
        with self.redis.pipeline() as p:
            p.hset(results_key(job), mapping=lines)
            if errors:
                p.hset(errors_key(job), mapping=errors)
            if oks:  # a redelivered chunk may now succeed where it failed before
                p.hdel(errors_key(job), *oks)
            p.hsetnx(job_key(job), "first", now)
            p.hset(job_key(job), "last", now)
            p.rpush(events_key(job), len(lines))
            for key in (job_key(job), results_key(job), errors_key(job), events_key(job)):
                p.expire(key, self.ttl)
            p.execute()

    def wait_for_progress(self, job: str, timeout_s: float) -> None:
        """Return as soon as a chunk of ``job`` is stored, or after ``timeout_s``."""
        if self.redis.blpop([events_key(job)], timeout=timeout_s):
            self.redis.delete(events_key(job))  # one wake-up covers every chunk so far

    def info(self, job: str) -> dict:
        with self.redis.pipeline() as p:
            p.hgetall(job_key(job))
            p.hlen(results_key(job))
            p.hlen(errors_key(job))
            meta, done, errors = p.execute()
        if not meta:
            raise JobError(f"job {job} is unknown (never submitted, or its results expired).")
        meta = {k.decode(): v.decode() for k, v in meta.items()}
        total = int(meta["total"])
        first, last = float(meta.get("first", 0) or 0), float(meta.get("last", 0) or 0)
        created = float(meta["created"])
        elapsed = (last if done >= total else time.time()) - created
        rate = done / elapsed if done and elapsed > 0 else 0.0
        eta = (total - done) / rate if rate else None
        return {"job": job, "total": total, "done": done, "errors": errors,
                "chunks": int(meta["chunks"]), "rate": rate, "eta_s": eta,
                "elapsed_s": elapsed, "complete": done >= total, "first": first,
                "model": json.loads(meta["model"]) if "model" in meta else None}

    def iter_results(self, job: str, total: int) -> Iterator[dict]:
        """Result lines in item order, read in batches so memory stays flat."""
        for start in range(0, total, READ_BATCH):
            indices = list(range(start, min(start + READ_BATCH, total)))
            for index, raw in zip(indices, self.redis.hmget(results_key(job), indices)):
                if raw is not None:
                    yield {"index": index, **json.loads(raw)}
