"""End-to-end worker benchmark, all in one run on the same files:

1. ceiling: two processes that read, decode, normalise and classify the files directly
   (no queue, no Redis), in batches of the chunk size, one onnxruntime thread each;
2. `digitscan scan --workers 2` (private Redis, 2 pool processes): images/s for several
   chunk sizes, and its ratio to the ceiling at the same size;
3. latency of a one-image job with warm workers (submit -> result stored), p50 and p99;
4. peak RSS of the worker processes;
5. start-up: a worker started until it says it is ready, and a whole `digitscan scan` of
   10 files (what a small job waits for, nearly all of it start-up), medians of 5.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.ratio_bench import timed_scan
from digitscan.trainer.data import load_mnist
from digitscan.trainer.pngs import write_test_pngs
from digitscan.worker.client import submit, wait
from digitscan.worker.embedded import EmbeddedRedis, LocalWorkers
from digitscan.worker.imaging import prepare
from digitscan.worker.scan import scan
from digitscan.worker.settings import Settings, SubmitOptions
from digitscan.worker.store import ResultStore

_clf = None


def _init(model: str) -> None:
    global _clf
    from digitscan.worker.model import Classifier

    _clf = Classifier(model, "cpu", threads=1)
    _clf.warm_up()


def _classify(paths: list[str]) -> int:
    digits = np.stack([prepare(Path(p).read_bytes()) for p in paths])
    return len(_clf.predict(digits))


def ceiling(files: list[str], model: str, batch: int, processes: int = 2) -> float:
    batches = [files[i : i + batch] for i in range(0, len(files), batch)]
    with mp.get_context("fork").Pool(processes, _init, (model,)) as pool:
        pool.map(_classify, batches[:processes])  # warm
        t0 = time.perf_counter()
        n = sum(pool.map(_classify, batches, chunksize=1))
        return n / (time.perf_counter() - t0)


def rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants' maximum, in MB."""
    def one(p: int) -> float:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return max([one(pid)] + [one(int(c)) for c in children])


def latency(files: list[str], model: str, n: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "r") as server:
        settings = Settings(broker_url=server.url, model=model, concurrency=2)
        store = ResultStore.from_url(settings.results_url, settings.result_ttl)
        with LocalWorkers(settings.to_env(), 2, Path(tmp) / "w.log") as workers:
            workers.wait_ready()
            times = []
            for i in range(n + 5):
                t0 = time.perf_counter()
                job = submit([files[i % len(files)]], settings, SubmitOptions(), store)
                wait(store, job.job, progress=False, poll_s=1.0, check=workers.check)
                if i >= 5:  # the first few warm the pool children
                    times.append(time.perf_counter() - t0)
            rss = rss_mb(workers.proc.pid)
    times.sort()
    return statistics.median(times) * 1000, times[int(0.99 * (len(times) - 1))] * 1000, rss


def start_up(files: list[str], model: str, runs: int = 5) -> tuple[float, float]:
    """(seconds until a 2-process worker is ready, seconds of a 10-file scan), medians."""
    ready, scans = [], []
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small"
        small.mkdir()
        for f in files[:10]:
            (small / Path(f).name).write_bytes(Path(f).read_bytes())
        for i in range(runs):
            with EmbeddedRedis(Path(tmp) / f"r{i}") as server:
                settings = Settings(broker_url=server.url, model=model, concurrency=2)
                t0 = time.perf_counter()
                workers = LocalWorkers(settings.to_env(), 2, Path(tmp) / f"w{i}.log").start()
                try:
                    workers.wait_ready(poll_s=0.005)  # its usual 0.1 s is too coarse here
                    ready.append(time.perf_counter() - t0)
                finally:
                    workers.stop(warm=False)
            scans.append(timed_scan(str(small), "--model", model)[1])
    return statistics.median(ready), statistics.median(scans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data")
    parser.add_argument("--model", default="models/digits.onnx")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--chunk-sizes", default="32,64,128,256,512")
    parser.add_argument("--latency-jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_test_pngs(load_mnist(args.data, fetch=False), tmp, limit=args.images)
        files = sorted(str(p) for p in Path(tmp).rglob("*.png"))
        print(f"{len(files)} MNIST test PNGs (dark ink on white), model {args.model}")
        print(f"{'chunk':>6} {'ceiling img/s':>14} {'scan img/s':>11} {'ratio':>6}")
        for size in [int(s) for s in args.chunk_sizes.split(",")]:
            # The ceiling classifies in batches of the same size, so the ratio is the queue's cost.
            top = ceiling(files, args.model, size)
            summary = scan([tmp], str(Path(tmp) / "out.jsonl"), Settings(model=args.model),
                           workers=2, options=SubmitOptions(chunk_size=size), progress=False)
            print(f"{size:>6} {top:>14.0f} {summary.images_per_s:>11.0f} "
                  f"{summary.images_per_s / top:>6.2f}")
        p50, p99, rss = latency(files, args.model, args.latency_jobs)
        print(f"one-image job, warm workers: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
              f"({args.latency_jobs} jobs)")
        print(f"worker RSS (largest process of the pool): {rss:.0f} MB")
        ready, small = start_up(files, args.model)
        print(f"start-up: a 2-process worker ready after {ready:.2f} s; `digitscan scan` of "
              f"10 files {small:.2f} s as a whole command (medians of 5)")


if __name__ == "__main__":
    main()
