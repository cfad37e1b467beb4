"""Per-image results in Redis, keyed by (job, item index), and the bookkeeping that lets
every image end with exactly one final result.

    digitscan:jobs               sorted set: job id -> created (for `digitscan jobs`)
    digitscan:job:<id>           hash: total, chunks, created, first, last, inputs, cancelled, ...
    digitscan:job:<id>:results   hash: item index -> packed result (see ``pack``); a client
                                 writing the job to a file drains it as it goes
    digitscan:job:<id>:seen      bitmap: bit i set once item i has a result (done = BITCOUNT)
    digitscan:job:<id>:errors    bitmap: bit i set while item i's result is an error
    digitscan:job:<id>:models    set: sha256 of every model that wrote a result
    digitscan:job:<id>:events    list: one entry per stored chunk, so waiters wake at once
    digitscan:job:<id>:pending   hash: chunk -> its message (msgpack), from publish until its
                                 results are stored: what a reconciler re-sends, as it was
    digitscan:job:<id>:done      set: chunks whose results are all stored
    digitscan:job:<id>:attempts  hash: chunk -> deliveries to a worker
    digitscan:job:<id>:dead      hash: chunk -> why it was dead-lettered
    digitscan:job:<id>:requeues  hash: chunk -> re-enqueues by the reconciler

HSET by index makes writes idempotent: a redelivered chunk overwrites its own results
instead of adding new ones. Every key carries the result TTL, refreshed on each write.
``pending`` is bounded by the submitter's window, so Redis holds O(window) image bytes;
a result costs ~100 B until drained, and two bits after.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import redis

from digitscan.errors import JobError
from digitscan.worker import messages

PREFIX = "digitscan:job:"
JOBS_KEY = "digitscan:jobs"
DELETED = "digitscan:deleted:"
# Redis is away (restarting, loading its AOF, failing over to a replica), slow, or full
# (maxmemory with noeviction): each passes, and none is a fault of the job.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError,
             redis.exceptions.OutOfMemoryError)
READ_BATCH = 2000
_DECODE = json.JSONDecoder().decode
# json.dumps builds an encoder for every call that passes separators: a third of pack's time.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
SUFFIXES = ("results", "seen", "errors", "models", "events", "pending", "done", "attempts",
            "dead", "requeues")
MODEL_REF = 12  # hex digits of the model's sha256 kept per result; the job keeps them all


def pack(line: dict) -> str:
    """A result as stored: the fields that vary per image, without the job id and with a
    short model reference (~50 B instead of ~270 B as a full line)."""
    return _ENCODE([line.get("source"), line.get("digit"), line.get("confidence"),
                    bool(line.get("review")), line.get("error"),
                    (line.get("model") or "")[:MODEL_REF]])


def unpack(job: str, index: int, raw: bytes, models: dict[str, str]) -> dict:
    # Decoded as json.loads decodes bytes, without its guessing of the encoding (a fifth of
    # this function's time, which a 60,000-image scan spends while its workers sit idle).
    source, digit, confidence, review, error, ref = _DECODE(raw.decode("utf-8", "surrogatepass"))
    return {"index": index, "job": job, "source": source, "digit": digit,
            "confidence": confidence, "review": review, "error": error,
            "model": models.get(ref, ref) or None}


# BITFIELD's widest unsigned integer: one SET writes up to this many consecutive bits.
_WIDEST = 63


def _bits(key: str, indices: list[int], value: int) -> list:
    """One BITFIELD command setting bit ``i`` of ``key`` to ``value`` for each index.
    Consecutive indices (a chunk's, nearly always) are set 63 at a time: a chunk of 256
    is 5 SETs, where one SET per bit made the command ~1,000 arguments that redis-py
    encodes in Python (~2 us an image, twice per chunk: a third of a result write)."""
    args: list = []
    ordered = sorted(set(indices))
    start = 0
    while start < len(ordered):
        end = start + 1
        while (end < len(ordered) and end - start < _WIDEST
               and ordered[end] == ordered[start] + end - start):
            end += 1
        width = end - start
        args += ["SET", f"u{width}", ordered[start], (1 << width) - 1 if value else 0]
        start = end
    return ["BITFIELD", key, *args]


def job_key(job: str, suffix: str | None = None) -> str:
    return PREFIX + job + (f":{suffix}" if suffix else "")


def results_key(job: str) -> str:
    return job_key(job, "results")


def errors_key(job: str) -> str:
    return job_key(job, "errors")


def events_key(job: str) -> str:
    return job_key(job, "events")


class ResultStore:
    def __init__(self, client: redis.Redis, ttl: int):
        self.redis = client
        self.ttl = ttl

    @classmethod
    def from_url(cls, url: str, ttl: int, **options) -> ResultStore:
        return cls(redis.Redis.from_url(url, **options), ttl)

    @classmethod
    def for_settings(cls, settings) -> ResultStore:
        url = settings.results_url
        # Timeouts: a host whose link is cut sees no reset; without them a call would wait
        # on a dead connection for ever instead of failing over to holding and retrying.
        return cls.from_url(url, settings.result_ttl, socket_timeout=30,
                            socket_connect_timeout=10, **settings.tls_options(url))

    def _expire_all(self, p, job: str) -> None:
        for key in (job_key(job), *(job_key(job, s) for s in SUFFIXES)):
            p.expire(key, self.ttl)

    # ------------------------------------------------------------ submission

    def create_job(self, job: str, total: int, chunks: int, meta: dict) -> None:
        fields = {"total": total, "chunks": chunks, "created": time.time(),
                  **{k: json.dumps(v) for k, v in meta.items()}}
        with self.redis.pipeline() as p:
            p.hset(job_key(job), mapping=fields)
            p.expire(job_key(job), self.ttl)
            p.zadd(JOBS_KEY, {job: fields["created"]})
            p.expire(JOBS_KEY, self.ttl)  # outlives its newest job; `jobs` prunes expired ones
            p.execute()

    def set_counts(self, job: str, total: int, chunks: int) -> None:
        self.redis.hset(job_key(job), mapping={"total": total, "chunks": chunks})

    def add_pending(self, job: str, chunk: int, message: dict) -> int:
        """Keep ``chunk``'s message until its results are stored; return how many chunks of
        the job are now in flight. Written before the message is published, so a message
        lost anywhere after this point can be re-sent as it was."""
        with self.redis.pipeline() as p:
            p.hset(job_key(job, "pending"), chunk, messages.pack(message))
            p.expire(job_key(job, "pending"), self.ttl)
            p.hlen(job_key(job, "pending"))
            return int(p.execute()[-1])

    def cancelled(self, job: str) -> bool:
        return bool(self.redis.hexists(job_key(job), "cancelled"))

    def in_flight(self, job: str) -> int:
        return int(self.redis.hlen(job_key(job, "pending")))

    def pending_chunks(self, job: str) -> list[int]:
        return sorted(int(c) for c in self.redis.hkeys(job_key(job, "pending")))

    def pending_message(self, job: str, chunk: int) -> dict | None:
        raw = self.redis.hget(job_key(job, "pending"), chunk)
        if raw is None:
            return None
        # JSON: kept by a client of the version before (a message is a map, which msgpack
        # never starts with "{").
        return json.loads(raw) if raw.startswith(b"{") else messages.unpack(raw)

    # ------------------------------------------------------------ workers

    def write_results(self, job: str, results: list[dict], chunk: int | None = None) -> None:
        """Store result lines (each with its ``index``) in one transaction; mark the chunk done."""
        if not results:
            return
        now = time.time()
        lines = {r["index"]: pack(r) for r in results}
        errors = [r["index"] for r in results if r.get("error")]
        oks = [r["index"] for r in results if not r.get("error")]
        models = {r["model"] for r in results if r.get("model")}
        with self.redis.pipeline() as p:
            p.hset(results_key(job), mapping=lines)
            p.execute_command(*_bits(job_key(job, "seen"), list(lines), 1))
            if errors:
                p.execute_command(*_bits(errors_key(job), errors, 1))
            if oks:  # a redelivered chunk may now succeed where it failed before
                p.execute_command(*_bits(errors_key(job), oks, 0))
            if models:
                p.sadd(job_key(job, "models"), *models)
            if chunk is not None:
                p.sadd(job_key(job, "done"), chunk)
                p.hdel(job_key(job, "pending"), chunk)
            p.hsetnx(job_key(job), "first", now)
            p.hset(job_key(job), "last", now)
            p.rpush(events_key(job), len(lines))
            self._expire_all(p, job)
            p.execute()

    def is_done(self, job: str, chunk: int) -> bool:
        return bool(self.redis.sismember(job_key(job, "done"), chunk))

    def chunk_state(self, job: str, chunk: int) -> str:
        """What a worker should do with a delivery: "todo", or skip it as "done",
        "cancelled" or "unknown" (the job was deleted or has expired)."""
        with self.redis.pipeline(transaction=False) as p:  # reads work even when Redis is full
            p.hmget(job_key(job), ["created", "cancelled"])
            p.sismember(job_key(job, "done"), chunk)
            (created, cancelled), done = p.execute()
        if created is None:
            return "unknown"
        if cancelled is not None:
            return "cancelled"
        return "done" if done else "todo"

    def start_attempt(self, job: str, chunk: int) -> int:
        """Count one more delivery of ``chunk`` to a worker; return the count."""
        with self.redis.pipeline() as p:
            p.hincrby(job_key(job, "attempts"), chunk, 1)
            p.expire(job_key(job, "attempts"), self.ttl)
            return int(p.execute()[0])

    def undo_attempt(self, job: str, chunk: int) -> None:
        """The delivery ended without fault of the chunk (this worker could not read its
        inputs): it does not count towards dead-lettering."""
        self.redis.hincrby(job_key(job, "attempts"), chunk, -1)

    def dead_letter(self, job: str, chunk: int, results: list[dict], reason: str) -> None:
        """Give every item of ``chunk`` that has no result yet an error result, and list it."""
        now = time.time()
        with self.redis.pipeline() as p:
            for r in results:  # an item with a result (even drained) keeps it
                p.getbit(job_key(job, "seen"), r["index"])
            seen = p.execute()
        fresh = [r for r, bit in zip(results, seen) if not bit]
        with self.redis.pipeline() as p:
            if fresh:
                p.hset(results_key(job), mapping={r["index"]: pack(r) for r in fresh})
                indices = [r["index"] for r in fresh]
                p.execute_command(*_bits(job_key(job, "seen"), indices, 1))
                p.execute_command(*_bits(errors_key(job), indices, 1))
            p.hset(job_key(job, "dead"), chunk, reason)
            p.sadd(job_key(job, "done"), chunk)
            p.hdel(job_key(job, "pending"), chunk)
            p.hset(job_key(job), "last", now)
            p.rpush(events_key(job), len(fresh))
            self._expire_all(p, job)
            p.execute()

    # ------------------------------------------------------------ clients

    def done_chunks(self, job: str) -> set[int]:
        """Chunks whose results are all stored (or that were dead-lettered)."""
        return {int(c) for c in self.redis.smembers(job_key(job, "done"))}

    def requeue_counts(self, job: str) -> dict[int, int]:
        """How often the reconciler re-sent each chunk."""
        return {int(c): int(n) for c, n in self.redis.hgetall(job_key(job, "requeues")).items()}

    def bump_requeue(self, job: str, chunk: int) -> int:
        with self.redis.pipeline() as p:
            p.hincrby(job_key(job, "requeues"), chunk, 1)
            p.expire(job_key(job, "requeues"), self.ttl)
            return int(p.execute()[0])

    def dead_chunks(self, job: str) -> dict[int, str]:
        return {int(c): r.decode() for c, r in self.redis.hgetall(job_key(job, "dead")).items()}

    def wait_for_progress(self, job: str, timeout_s: float) -> None:
        """Return as soon as a chunk of ``job`` is stored, or after ``timeout_s``."""
        if self.redis.blpop([events_key(job)], timeout=timeout_s):
            self.redis.delete(events_key(job))  # one wake-up covers every chunk so far

    def exists(self, job: str) -> bool:
        """Whether the job was created here. Not just "its hash exists": after a restart
        without persistence, a worker's late result write re-creates the hash with only
        its timestamps, and such a job still needs ``create_job``."""
        return bool(self.redis.hexists(job_key(job), "created"))

    def info(self, job: str) -> dict:
        """Progress of ``job``. Reads only the counters: the inputs list can be large."""
        with self.redis.pipeline(transaction=False) as p:  # reads work even when Redis is full
            p.hmget(job_key(job), ["total", "chunks", "created", "last", "cancelled"])
            p.bitcount(job_key(job, "seen"))
            p.bitcount(errors_key(job))
            p.hlen(job_key(job, "dead"))
            (total, chunks, created, last, cancelled), done, errors, dead = p.execute()
        if total is None:
            raise JobError(f"job {job} is unknown (never submitted, its results expired, or Redis "
                           "lost it: a Redis without persistence forgets jobs when it restarts).")
        total, created, last = int(total), float(created), float(last or 0)
        elapsed = (last if done >= total else time.time()) - created
        rate = done / elapsed if done and elapsed > 0 else 0.0
        eta = (total - done) / rate if rate else None
        return {"job": job, "total": total, "done": done, "errors": errors, "dead_chunks": dead,
                "chunks": int(chunks), "rate": rate, "eta_s": eta, "elapsed_s": elapsed,
                "complete": done >= total, "last": last, "created": created,
                "cancelled": float(cancelled) if cancelled is not None else None}

    # ------------------------------------------------------------ lifecycle

    def jobs(self) -> list[dict]:
        """Every job Redis still knows, oldest first; ids of expired jobs are pruned."""
        out, gone = [], []
        for raw in self.redis.zrange(JOBS_KEY, 0, -1):
            job = raw.decode()
            try:
                out.append(self.info(job))
            except JobError:
                gone.append(job)
        if gone:
            self.redis.zrem(JOBS_KEY, *gone)
        return out

    def cancel(self, job: str) -> None:
        """Workers skip the job's chunks from now on and reconcilers re-send none; its
        results so far stay readable."""
        self.info(job)  # JobError if unknown
        with self.redis.pipeline() as p:
            p.hsetnx(job_key(job), "cancelled", time.time())
            p.delete(job_key(job, "pending"))
            p.execute()

    def delete(self, job: str) -> int:
        """Remove every key of ``job``; return how many there were. A marker stays for an
        hour, so a client still submitting the job stops instead of taking it for lost."""
        with self.redis.pipeline() as p:
            p.delete(job_key(job), *(job_key(job, s) for s in SUFFIXES))
            p.zrem(JOBS_KEY, job)
            p.set(DELETED + job, 1, ex=3600)
            return int(p.execute()[0])

    def was_deleted(self, job: str) -> bool:
        return bool(self.redis.exists(DELETED + job))

    def job_queue(self, job: str) -> str | None:
        """The queue the job was published on (None for jobs of older versions)."""
        raw = self.redis.hget(job_key(job), "queue")
        return None if raw is None else json.loads(raw)

    def submission(self, job: str) -> tuple[list[str], dict] | None:
        """The inputs and options a job was submitted with, or None if not recorded."""
        inputs, options = self.redis.hmget(job_key(job), ["inputs", "options"])
        if inputs is None or options is None:
            return None
        return json.loads(inputs), json.loads(options)

    def models(self, job: str) -> dict[str, str]:
        """Short model reference -> sha256, for the models that wrote the job's results."""
        return {m.decode()[:MODEL_REF]: m.decode() for m in self.redis.smembers(job_key(job, "models"))}

    def iter_results(self, job: str, total: int) -> Iterator[dict]:
        """Result lines in item order, read in batches so memory stays flat. Results a
        client drained (``drain``) are no longer here."""
        models = self.models(job)
        for start in range(0, total, READ_BATCH):
            indices = list(range(start, min(start + READ_BATCH, total)))
            for index, raw in zip(indices, self.redis.hmget(results_key(job), indices)):
                if raw is not None:
                    yield unpack(job, index, raw, models)

    def drain(self, job: str, batch: int = READ_BATCH) -> dict[bytes, bytes]:
        """Take up to ``batch`` stored results out of Redis, for a client that writes them to
        its file as they come: Redis then holds only the results not yet written. Counts
        stay (the ``seen`` bitmap). A result stored again after a redelivery comes again,
        identical. Packed, by item index: ``unpack`` makes each a result line."""
        cursor, raw = 0, {}
        while len(raw) < batch:
            cursor, found = self.redis.hscan(results_key(job), cursor, count=batch)
            raw.update(found)
            if cursor == 0:
                break
        if raw:
            self.redis.hdel(results_key(job), *raw)
        return raw
