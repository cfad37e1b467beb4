"""`digitscan scan` images/s per worker count on each provider, for a GPU host (issue #13).

Here (the fonts, MNIST): the sets, packed for a host that has neither, one archive each
(each call to a GPU host carries at most 64 MiB; 10,000 cells are 52 MB, so --cells 3000):
    python -m bench.gpu_sweep pack --data data --out .gpu --cells 3000
There (after `source .gpu/assemble.sh` and `source bench/gpu_env.sh`):
    python -m bench.gpu_sweep run .gpu/mnist.tar.gz .gpu/cells.tar.gz
On a GPU host that has both (`make bench`'s last step; one line and nothing else where
onnxruntime offers no CUDA provider):
    python -m bench.gpu_sweep here --data data
Each point is one whole `scan` command (start-up included, as `bench.ratio_bench` times it):
60,000 MNIST training images as PNG files and form cells (plain, boxed, printed; the ratio
bench's sets), the CPU provider (scan's default model there) and the CUDA provider (fp32).
Each also says where its CPU time went, per role (`bench.roles`: the client, the Celery
parent, the pool, Redis), in µs an image.

What bends the curve: `--split K,...` also runs, for the most workers of each provider, K
scans at once on K disjoint parts of each set (each its own client, Redis and 1/K of the
workers) and reports their images together (all images / the wall time of the last). If K
clients go faster than one with the same workers, the one client is the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SWEEP = {"cpu": (2, 4, 8, 16), "cuda": (1, 2, 4, 8, 16)}


def pack(data: str, out: str, cells: int) -> None:
    from bench.ratio_bench import write_cells, write_mnist
    from digitscan.trainer.data import load_mnist

    mnist = load_mnist(data, fetch=False)
    Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_mnist(mnist, Path(tmp) / "mnist")
        write_cells(mnist, Path(tmp) / "cells", cells)
        for name in ("mnist", "cells"):
            with tarfile.open(Path(out) / f"{name}.tar.gz", "w:gz") as tar:
                tar.add(Path(tmp) / name, name)
            print(f"{out}/{name}.tar.gz: {(Path(out) / f'{name}.tar.gz').stat().st_size / 1e6:.1f} MB")


def _command(folder: Path, provider: str, workers: int, out: str, variant: str = ""
             ) -> list[str]:
    """The scan command; a ``variant`` (``NAME=VALUE,...``) first sets those constants of
    ``digitscan.worker.scan`` (e.g. POOL_PER_NODE=4: a Celery parent per 4 pool processes;
    BY_PATH_FROM_WORKERS=99: small files inline), to compare a choice side by side."""
    start = ["-m", "digitscan.cli"]
    if variant:
        sets = "; ".join(f"s.{assignment}" for assignment in variant.split(","))
        start = ["-c", f"import digitscan.worker.scan as s; {sets}\n"
                       "from digitscan.cli import main; main()"]
    return [sys.executable, *start, "-q", "scan", str(folder), "--workers", str(workers),
            "--provider", provider, "--out", out]


def _lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def scan(folder: Path, provider: str, workers: int, variant: str = "") -> dict:
    """One whole scan command: images/s, and CPU µs an image per role of its processes."""
    from bench.roles import run_with_roles

    with tempfile.TemporaryDirectory() as tmp:
        command = _command(folder, provider, workers, f"{tmp}/r.jsonl", variant)
        with open(f"{tmp}/err", "w+") as err:
            seconds, cpu, code = run_with_roles(command, stdout=subprocess.DEVNULL, stderr=err)
            err.seek(0)
            said = err.read().strip()
        lines = _lines(f"{tmp}/r.jsonl")
        if code:  # one point failed: the sweep goes on
            print(f"  scan failed ({code}): {said[-400:]}", flush=True)
            lines = 0
    return {"provider": provider, "workers": workers, "variant": variant, "images": lines,
            "seconds": seconds, "images_per_s": lines / seconds if lines else 0.0,
            "cpu_us_per_image": {k: 1e6 * v / lines for k, v in cpu.items()} if lines else {}}


def split_scan(folder: Path, provider: str, workers: int, k: int) -> dict:
    """K scans at once on K disjoint parts of ``folder`` (hard links), workers // k each,
    with the onnxruntime threads of one scan of ``workers`` (each scan alone would give its
    fewer processes more threads, and K of them would oversubscribe the cores)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "DIGITSCAN_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        files = sorted(folder.iterdir())
        parts = [Path(tmp) / f"part{i}" for i in range(k)]
        for i, part in enumerate(parts):
            part.mkdir()
            for f in files[i::k]:
                os.link(f, part / f.name)
        t0 = time.perf_counter()
        procs = [subprocess.Popen(_command(part, provider, max(1, workers // k), f"{part}.jsonl"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                 for part in parts]
        codes = [p.wait() for p in procs]
        seconds = time.perf_counter() - t0
        lines = sum(_lines(f"{part}.jsonl") for part in parts)
    if any(codes):
        print(f"  split scan failed: exit codes {codes}", flush=True)
    return {"provider": provider, "workers": workers, "split": k, "images": lines,
            "seconds": seconds, "images_per_s": lines / seconds if lines else 0.0}


def _roles(row: dict) -> str:
    cpu = row.get("cpu_us_per_image")
    return "" if not cpu else "; CPU µs an image: " + ", ".join(
        f"{name} {us:.0f}" for name, us in cpu.items() if us >= 0.5)


def run(archives: list[str], out: str | None, splits: tuple[int, ...] = (),
        sweep: dict = SWEEP, repeat: int = 1, variants: tuple[str, ...] = ("",)) -> None:
    work = Path(tempfile.mkdtemp())
    names = []
    for archive in archives:
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
            names += sorted({m.name.split("/")[0] for m in tar.getmembers()})
    sweep_sets(work, names, out, splits, sweep, repeat, variants)


def here(data: str, out: str | None, sweep: dict, mnist_images: int | None = None,
         cells: int = 10_000) -> None:
    """The sweep on sets written here from this host's MNIST and fonts (the ratio bench's),
    where onnxruntime offers every provider ``sweep`` asks for; else one line saying so."""
    import onnxruntime as ort

    from bench.ratio_bench import write_cells, write_mnist
    from digitscan.trainer.data import load_mnist

    if "cuda" in sweep and "CUDAExecutionProvider" not in ort.get_available_providers():
        print("worker-count sweep: not run, onnxruntime offers no CUDA provider here (install "
              "onnxruntime-gpu on a GPU host; a lent host with no network: bench/gpu_scale.sh)")
        return
    mnist = load_mnist(data, fetch=False)
    with tempfile.TemporaryDirectory() as tmp:
        write_mnist(mnist, Path(tmp) / "mnist", mnist_images)
        write_cells(mnist, Path(tmp) / "cells", cells)
        sweep_sets(Path(tmp), ["mnist", "cells"], out, sweep=sweep)


def sweep_sets(work: Path, names: list[str], out: str | None, splits: tuple[int, ...] = (),
               sweep: dict = SWEEP, repeat: int = 1, variants: tuple[str, ...] = ("",)) -> None:
    """Each set (a folder of ``work``) scanned with each provider's worker counts."""
    for name in names:  # --repeat: every file k more times, as hard links of other names
        files = sorted((work / name).iterdir())
        for k in range(1, repeat):
            for f in files:
                os.link(f, f.with_name(f"r{k}-{f.name}"))
    rows = []
    for name in names:
        for provider, counts in sweep.items():
            for workers in counts:
                for variant in variants:
                    row = {"set": name, **scan(work / name, provider, workers, variant)}
                    rows.append(row)
                    print(f"{name:<6} {provider:<5} {workers:>2} workers{f' [{variant}]' * bool(variant)}: "
                          f"{row['images_per_s']:>8,.0f} images/s ({row['images']:,} in "
                          f"{row['seconds']:.1f} s){_roles(row)}", flush=True)
            for k in splits:
                row = {"set": name, **split_scan(work / name, provider, max(counts), k)}
                rows.append(row)
                print(f"{name:<6} {provider:<5} {max(counts):>2} workers as {k} scans at once: "
                      f"{row['images_per_s']:>8,.0f} images/s ({row['images']:,} in "
                      f"{row['seconds']:.1f} s)", flush=True)
    if out:
        Path(out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", default="data")
    p.add_argument("--out", default=".gpu", help="folder for mnist.tar.gz and cells.tar.gz")
    p.add_argument("--cells", type=int, default=10_000)
    r = sub.add_parser("run")
    r.add_argument("archives", nargs="+")
    r.add_argument("--out", default=None, help="also write the rows here as JSON")
    r.add_argument("--repeat", type=int, default=1, help="each set's files this many times")
    r.add_argument("--variants", nargs="*", default=[""],
                   help="scan constants per variant, e.g. '' POOL_PER_NODE=4 (see _command)")
    r.add_argument("--split", default="", help="e.g. 2,4: also K scans at once (see above)")
    r.add_argument("--cpu", default=None, help="worker counts for the CPU provider, e.g. 2,16")
    r.add_argument("--cuda", default=None, help="worker counts for CUDA (0: none)")
    h = sub.add_parser("here")
    h.add_argument("--data", default="data")
    h.add_argument("--out", default=None, help="also write the rows here as JSON")
    h.add_argument("--mnist", type=int, default=None, help="MNIST PNGs (default: all 60,000)")
    h.add_argument("--cells", type=int, default=10_000)
    h.add_argument("--cpu", default=None, help="worker counts for the CPU provider, e.g. 2,16 "
                   "(default: those of 2, 4, 8, 16 up to this host's cores)")
    h.add_argument("--cuda", default=None, help="worker counts for CUDA (0: none)")
    args = parser.parse_args()
    if args.cmd == "pack":
        pack(args.data, args.out, args.cells)
    else:
        cores = os.cpu_count() or 1
        default = dict(SWEEP)
        if args.cmd == "here":  # this host's cores, not a lent 16-core one's
            default["cpu"] = tuple(n for n in SWEEP["cpu"] if n <= cores) or (cores,)
        counts = {p: tuple(int(n) for n in (given or ",".join(map(str, default[p]))).split(",")
                           if int(n) > 0)
                  for p, given in (("cpu", args.cpu), ("cuda", args.cuda))}
        sweep = {p: c for p, c in counts.items() if c}
        if args.cmd == "here":
            here(args.data, args.out, sweep, args.mnist, args.cells)
        else:
            run(args.archives, args.out, tuple(int(k) for k in args.split.split(",") if k),
                sweep, args.repeat, tuple(args.variants))
