"""Job-scale benchmark: memory and fairness, with 2 workers on this machine.

1. 100,000 and 1,000,000 MNIST PNGs (a zip, the test set 10x / 100x over) through
   `digitscan submit --wait --out` on a Redis capped at 64 MB (noeviction): images/s,
   Redis peak memory, client peak RSS;
2. a 100-image job submitted behind a queued 100,000-image job: seconds until complete.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import redis

from digitscan.trainer.data import load_mnist
from digitscan.trainer.pngs import write_test_pngs
from digitscan.worker.client import submit, wait
from digitscan.worker.embedded import EmbeddedRedis, LocalWorkers
from digitscan.worker.settings import Settings, SubmitOptions
from digitscan.worker.store import ResultStore

CLIENT = ("import resource, sys\n"
          "from digitscan.cli import main\n"
          "try:\n"
          "    main(sys.argv[1:], prog_name='digitscan')\n"
          "finally:\n"
          "    print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")


def zip_of(pngs: Path, copies: int, out: Path) -> Path:
    files = sorted(pngs.rglob("*.png"))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for c in range(copies):
            for f in files:
                zf.writestr(f"{c:03d}/{f.parent.name}/{f.name}", f.read_bytes())
    return out


def scale(tmp: Path, pngs: Path, model: str, copies: int) -> dict:
    archive = zip_of(pngs, copies, tmp / f"x{copies}.zip")
    with EmbeddedRedis(tmp / f"redis{copies}", maxmemory="64mb") as server:
        settings = Settings(broker_url=server.url, model=model, concurrency=2)
        with LocalWorkers(settings.to_env(), 2, tmp / f"w{copies}.log") as workers:
            workers.wait_ready()
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CLIENT, "-q", "submit", str(archive),
                                   "--wait", "--out", str(tmp / f"r{copies}.jsonl")],
                                  capture_output=True, text=True,
                                  env={**os.environ, **settings.to_env()})
            seconds = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        peak = int(redis.Redis.from_url(server.url).info("memory")["used_memory_peak"])
    archive.unlink()
    rss_kb = int(proc.stderr.rsplit("maxrss", 1)[1].split()[0])
    n = copies * 10_000
    return {"images": n, "images/s": n / seconds, "redis_peak_mb": peak / 2**20,
            "client_rss_mb": rss_kb / 1024}


def fairness(tmp: Path, pngs: Path, model: str) -> float:
    small = tmp / "small"
    small.mkdir(exist_ok=True)
    for f in sorted(pngs.rglob("*.png"))[:100]:
        (small / f.name).write_bytes(f.read_bytes())
    with EmbeddedRedis(tmp / "redis-fair") as server:
        settings = Settings(broker_url=server.url, model=model, concurrency=2)
        store = ResultStore.from_url(server.url, settings.result_ttl)
        with LocalWorkers(settings.to_env(), 2, tmp / "wf.log") as workers:
            workers.wait_ready()
            big: dict = {}
            thread = threading.Thread(target=lambda: big.update(job=submit(
                [str(pngs)] * 10, settings, SubmitOptions(), store,
                on_created=lambda job: big.update(id=job))))
            thread.start()
            while "id" not in big or store.in_flight(big["id"]) < SubmitOptions().window:
                time.sleep(0.01)
            t0 = time.perf_counter()
            little = submit([str(small)], settings, SubmitOptions(), store)
            wait(store, little.job, progress=False, timeout=600)
            seconds = time.perf_counter() - t0
            thread.join()
            wait(store, big["id"], progress=False, timeout=900)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--model", default="models/digits.onnx")
    parser.add_argument("--copies", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digitscan-jobs-") as tmp:
        tmp = Path(tmp)
        write_test_pngs(load_mnist(args.data), tmp / "png")
        print(f"small job behind a queued 100,000-image job: done in "
              f"{fairness(tmp, tmp / 'png', args.model):.1f} s", flush=True)
        for copies in args.copies:
            r = scale(tmp, tmp / "png", args.model, copies)
            print(f"{r['images']:>9,} images, 64 MB Redis: {r['images/s']:.0f} images/s, Redis "
                  f"peak {r['redis_peak_mb']:.1f} MB, client peak RSS {r['client_rss_mb']:.0f} MB",
                  flush=True)


if __name__ == "__main__":
    main()
