"""`digitscan scan` against the fixed throughput yardstick, side by side in one run.

The yardstick (bench/yardstick/, copied from the team's shared reference of 2026-11-26:
the model that shipped that day, 18.7 M multiply-adds): two processes (fork), each taking
every second file, each doing for batches of 256 files
``np.stack([np.asarray(Image.open(f).convert("L").resize((28, 28))) for f in batch])`` and
one ``session.run`` on the CPU provider with one intra- and one inter-op thread; both warmed
up on 500 files first; images/s = files / wall time of the timed pass. No queue, no Redis,
no cleanup. Ratio = `digitscan scan --workers 2` images/s, measured as the whole command
(start-up included), over the yardstick's, on the same files:

    python -m bench.ratio_bench [--data data] [--rounds 3]

60,000 MNIST PNGs (the training set, dark ink on white) and 10,000 form cells of
``digitscan.export.populations`` (plain paper, boxed and printed mixed, PNG and JPEG).
Prints each round and the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitscan.trainer.data import Mnist, load_mnist

YARDSTICK = Path(__file__).parent / "yardstick" / "ref-digits-2026-11-26.onnx"
YARDSTICK_SHA256 = "e70ff3e99e7e9fab2bdd2b0798f6d245aea8be0c8ac4774869ef97df9764479f"
BATCH = 256


def _yardstick_part(files: list[str], warm: list[str], start, result) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(YARDSTICK), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch: list[str]) -> None:
        x = np.stack([np.asarray(Image.open(f).convert("L").resize((28, 28))) for f in batch])
        session.run(None, {name: x[:, None]})

    for i in range(0, len(warm), BATCH):
        run(warm[i : i + BATCH])
    start.wait()
    for i in range(0, len(files), BATCH):
        run(files[i : i + BATCH])
    result.put(time.perf_counter())


def yardstick(files: list[str]) -> float:
    ctx = mp.get_context("fork")
    start, result = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_yardstick_part, args=(files[k::2], files[k:1000:2], start, result))
             for k in range(2)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    ends = [result.get() for _ in procs]
    for p in procs:
        p.join()
    return len(files) / (max(ends) - t0)


def timed_scan(folder: str, *options: str) -> tuple[int, float]:
    """(result lines, seconds) of one whole `digitscan scan FOLDER OPTIONS` command, start-up
    included; a failed scan raises CalledProcessError with its stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "digitscan.cli", "-q", "scan", folder, *options,
                        "--out", f"{tmp}/r.jsonl"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t0
        with open(f"{tmp}/r.jsonl") as lines:
            return sum(1 for _ in lines), seconds


def scan_rate(folder: str, model: str | None) -> float:
    lines, seconds = timed_scan(folder, "--workers", "2", *(["--model", model] if model else []))
    return lines / seconds


def write_mnist(mnist: Mnist, out: Path, n: int | None = None) -> None:
    out.mkdir()
    for i, image in enumerate(mnist.train_images[:n]):
        Image.fromarray(255 - image).save(out / f"{i:05d}.png")


def write_cells(mnist: Mnist, out: Path, n: int = 10_000) -> None:
    from digitscan.export.populations import population

    out.mkdir()
    third = n // 3
    for kind, count in (("form", n - 2 * third), ("boxed", third), ("printed", third)):
        cells, _ = population(kind, mnist, count, seed=7)
        for i, data in enumerate(cells):
            ext = "png" if data.startswith(b"\x89PNG") else "jpg"
            (out / f"{kind}-{i:05d}.{ext}").write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--model", default=None,
                        help="default: scan's own (worker.settings.default_model: int8 or fp32)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    got = hashlib.sha256(YARDSTICK.read_bytes()).hexdigest()
    if got != YARDSTICK_SHA256:
        sys.exit(f"error: {YARDSTICK} has sha256 {got}, not the yardstick's {YARDSTICK_SHA256}")
    mnist = load_mnist(args.data, fetch=False)
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"MNIST PNGs": Path(tmp) / "mnist", "form cells": Path(tmp) / "cells"}
        write_mnist(mnist, sets["MNIST PNGs"])
        write_cells(mnist, sets["form cells"])
        for name, folder in sets.items():
            files = sorted(str(p) for p in folder.iterdir())
            ratios = []
            for r in range(args.rounds):
                ref = yardstick(files)
                ours = scan_rate(str(folder), args.model)
                ratios.append(ours / ref)
                print(f"{name} ({len(files):,}) round {r + 1}: scan {ours:,.0f} images/s, "
                      f"yardstick {ref:,.0f} images/s, ratio {ours / ref:.2f}", flush=True)
            print(f"{name}: median ratio {statistics.median(ratios):.2f}", flush=True)


if __name__ == "__main__":
    main()
