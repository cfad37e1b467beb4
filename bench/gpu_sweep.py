"""`digitscan scan` images/s per worker count on each provider, for a GPU host (issue #13).

Here (the fonts, MNIST): the sets, packed for a host that has neither, one archive each
(each call to a GPU host carries at most 64 MiB; 10,000 cells are 52 MB, so --cells 3000):
    python -m bench.gpu_sweep pack --data data --out .gpu --cells 3000
There (after `source .gpu/assemble.sh` and `source bench/gpu_env.sh`):
    python -m bench.gpu_sweep run .gpu/mnist.tar.gz .gpu/cells.tar.gz
Each point is one whole `scan` command (start-up included, as `bench.ratio_bench` times it):
60,000 MNIST training images as PNG files and form cells (plain, boxed, printed; the ratio
bench's sets), the CPU provider (the int8 model) and the CUDA provider (fp32).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
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


def scan(folder: Path, provider: str, workers: int) -> dict:
    from bench.ratio_bench import timed_scan

    try:
        lines, seconds = timed_scan(str(folder), "--workers", str(workers), "--provider", provider)
    except subprocess.CalledProcessError as exc:  # one point failed: the sweep goes on
        print(f"  scan failed ({exc.returncode}): {exc.stderr.strip()[-400:]}", flush=True)
        lines, seconds = 0, float("nan")
    return {"provider": provider, "workers": workers, "images": lines, "seconds": seconds,
            "images_per_s": lines / seconds if lines else 0.0}


def run(archives: list[str], out: str | None) -> None:
    work = Path(tempfile.mkdtemp())
    names = []
    for archive in archives:
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
            names += sorted({m.name.split("/")[0] for m in tar.getmembers()})
    rows = []
    for name in names:
        for provider, counts in SWEEP.items():
            for workers in counts:
                row = {"set": name, **scan(work / name, provider, workers)}
                rows.append(row)
                print(f"{name:<6} {provider:<5} {workers:>2} workers: {row['images_per_s']:>8,.0f} "
                      f"images/s ({row['images']:,} in {row['seconds']:.1f} s)", flush=True)
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
    args = parser.parse_args()
    if args.cmd == "pack":
        pack(args.data, args.out, args.cells)
    else:
        run(args.archives, args.out)
