"""The job lifecycle from the command line, as an operator runs it: `submit` prints the
job id, `jobs` lists it, `cancel` stops it with its results kept, `delete` removes it.
Real Redis, real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
import redis

from digitscan.worker.embedded import EmbeddedRedis
from digitscan.worker.settings import Settings
from digitscan.worker.store import ResultStore

from .faultapp import faulty_workers

pytestmark = pytest.mark.integration


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitscan.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **settings.to_env()})


def test_submit_jobs_cancel_results_delete(tmp_path, mnist, shipped_model):
    from digitscan.trainer.pngs import write_test_pngs

    folder = tmp_path / "in"
    write_test_pngs(mnist, folder, limit=80)
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = Settings(broker_url=server.url, model=str(shipped_model), concurrency=2,
                            queue=f"q-{uuid.uuid4().hex[:6]}")
        store = ResultStore.from_url(server.url, settings.result_ttl)
        out = cli(settings, "submit", str(folder), "--chunk-size", "4")
        assert out.returncode == 0, out.stderr
        job = out.stdout.strip()
        assert len(job) == 32 and "submitted 80 images in 20 chunks" in out.stderr
        listed = cli(settings, "jobs")
        assert listed.returncode == 0 and listed.stdout.startswith(f"{job}  running")
        assert "0/80" in listed.stdout

        pool = faulty_workers({**settings.to_env(), "DIGITSCAN_TEST_DELAY_S": "0.3"}, 2,
                              tmp_path / "w.log").start()
        try:
            deadline = time.monotonic() + 60
            while store.info(job)["done"] < 8:
                pool.check()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            cancelled = cli(settings, "cancel", job)
            assert cancelled.returncode == 0 and "cancelled at" in cancelled.stdout
            client = redis.Redis.from_url(server.url)
            while client.llen(settings.queue) or client.hlen("unacked"):  # the pool drains it
                pool.check()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            pool.stop()
        done = store.info(job)["done"]
        assert 8 <= done < 80  # what ran before the cancel is kept; the rest was skipped
        assert pool.logfile.read_text().count(": cancelled, 0 images") >= 10
        assert "cancelled" in cli(settings, "status", job).stdout
        assert cli(settings, "jobs").stdout.startswith(f"{job}  cancelled")
        kept = cli(settings, "results", job, "--out", str(tmp_path / "r.jsonl"))
        assert kept.returncode == 0 and f"wrote {done} results" in kept.stdout

        deleted = cli(settings, "delete", job)
        assert deleted.returncode == 0 and f"deleted job {job}" in deleted.stdout
        assert [k for k in client.scan_iter(f"digitscan:job:{job}*")] == []
        assert cli(settings, "jobs").stderr.strip() == "no jobs"
        gone = cli(settings, "status", job)
        assert gone.returncode == 1 and gone.stderr.startswith(f"error: job {job} is unknown")
