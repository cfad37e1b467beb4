"""Recipe search for the shipped model on a GPU host that has PyTorch but neither the fonts
nor OpenCV: the training data are made here first, then several recipes train side by side.

Here (the fonts, the worker's cleanup):
    python -m bench.gpu_train pack --data data --out .gpu/train.npz
On the GPU host (torch, numpy, tqdm; no install of digitscan: run from the checkout with the
namespace laid out as in bench/gpu_check.sh):
    python -m bench.gpu_train idx .gpu/train.npz --root data   # MNIST for validate
    python -m bench.gpu_train run .gpu/train.npz --out $OUT
Each recipe writes OUT/NAME.pt (model, config and metrics; no optimizer state) and
OUT/NAME.json; OUT/log.txt says what ran when. Recipes in one group run one after another in
one process (a teacher, then its students); groups run in parallel on the one GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

TEACHER = {"channels": [64, 128], "hidden": 256, "dropout": 0.3, "num_classes": 11}  # 74 M MACs
# name, recipe overrides; each inner list runs in order in one process. This round (fifth,
# 2026-11-27): fine-tunes of the shipped weights (``init``, a tenth of the recipe's peak
# rate, as the 4-epoch CPU fine-tune that ships): longer, on a second rendered cell set,
# another seed, and from a 74 M multiply-add teacher trained alongside (distillation). The
# earlier rounds' groups and what they gave are in docs/benchmarks.md.
SHIPPED = "models/digits.pt"
FINE = {"init": SHIPPED, "lr": 4e-4}
GROUPS = [
    [("ft8", {**FINE, "epochs": 8})],
    [("ft8s2", {**FINE, "epochs": 8, "cell_sets": 2})],
    [("ft8s2-seed1", {**FINE, "epochs": 8, "cell_sets": 2, "seed": 1})],
    [("ft12s2", {**FINE, "epochs": 12, "cell_sets": 2})],
    [("teacher", {"arch": "cnn", "model_args": TEACHER, "cells": True, "epochs": 10,
                  "cell_sets": 2}),
     ("ft6s2-distill", {**FINE, "epochs": 6, "cell_sets": 2, "teacher": "teacher"})],
] + [  # more seeds of one fine-tune: the ingredients of a weight average (`digitscan average`)
    [(f"ft8s2-seed{k}", {**FINE, "epochs": 8, "cell_sets": 2, "seed": k})] for k in range(2, 8)
]


def pack(data: str, out: str, cell_sets: int = 1, raw: bool = True) -> None:
    """The parts ``training_data`` mixes (MNIST's writers, ``cell_sets`` cell sets), so each
    recipe composes its own mix there with ``training_mix``; MNIST's raw training images only
    with ``raw`` (for ``idx``: they are 10 MB of the 64 a GPU run may carry)."""
    from digitscan.trainer.config import TrainConfig
    from digitscan.trainer.data import load_mnist
    from digitscan.trainer.train import cell_training_parts

    mnist = load_mnist(data)
    writers, labels, sets, (cx, cy) = cell_training_parts(
        TrainConfig(data=data, cell_sets=cell_sets), mnist)
    parts = {f"s{k}x": x for k, (x, _) in enumerate(sets)} | {f"s{k}y": y for k, (_, y) in enumerate(sets)}
    if raw:
        parts |= {"mx": mnist.train_images, "my": mnist.train_labels}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, w=writers, wy=labels, cx=cx, cy=cy, tx=mnist.test_images,
                        ty=mnist.test_labels, **parts)
    print(f"{out}: {len(writers)} writers, {len(sets)} cell sets of {len(sets[0][0])}, {len(cx)} "
          f"calibration, {len(mnist.test_images)} test images, "
          f"{Path(out).stat().st_size / 1e6:.1f} MB")


def idx(bundle: str, root: str) -> None:
    """MNIST's IDX files under ROOT from the bundle (for validate and the benches there)."""
    from digitscan.trainer.data import from_existing, raw_dir, write_idx

    raw_dir(root).mkdir(parents=True, exist_ok=True)
    with np.load(bundle) as z:
        for name, key in (("train-images-idx3-ubyte", "mx"), ("train-labels-idx1-ubyte", "my"),
                          ("t10k-images-idx3-ubyte", "tx"), ("t10k-labels-idx1-ubyte", "ty")):
            write_idx(raw_dir(root) / name, z[key])
    from_existing(Path(root))  # the pinned sha256s, or this raises
    print(f"MNIST in {raw_dir(root)}")


def _group(bundle: str, out: str, group: list, device: str = "cuda", smoke: bool = False,
           scale: float = 1.0) -> None:
    import torch

    from digitscan.trainer.config import TrainConfig
    from digitscan.trainer.data import Mnist
    from digitscan.trainer.train import main, training_mix

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {group[0][0]} %(message)s",
                        filename=f"{out}/log.txt")
    with np.load(bundle) as z:
        mnist = Mnist(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64), z["tx"], z["ty"],
                      source="bench.gpu_train bundle")
        parts = {k: z[k] for k in z.files if k not in ("mx", "my")}
    sets = []  # s0x/s0y, s1x/s1y, ...: as many cell sets as pack stored
    while f"s{len(sets)}x" in parts:
        sets.append((parts[f"s{len(sets)}x"], parts[f"s{len(sets)}y"]))
    for name, overrides in group:
        need = overrides.get("cell_sets", 1)
        if need > len(sets):
            logging.error("%s needs %d cell sets, the bundle has %d", name, need, len(sets))
            return
        x, y = training_mix(parts["w"], parts["wy"], sets[:need], overrides.get("mnist_repeat", 1))
        prepared = mnist, (x, y, parts["cx"], parts["cy"])
        if smoke:  # a check of this script itself: a few images, one epoch
            small = Mnist(mnist.train_images, mnist.train_labels, mnist.test_images[:500],
                          mnist.test_labels[:500], mnist.source)
            pick = np.random.default_rng(0).choice(len(x), 1000, replace=False)
            prepared = small, (x[pick], y[pick], parts["cx"][:500], parts["cy"][:500])
        work = Path("/tmp/gpu_train") / name
        overrides = dict(overrides)
        if "teacher" in overrides:
            overrides["teacher"] = str(Path("/tmp/gpu_train") / overrides["teacher"] / "checkpoint.pt")
        overrides["epochs"] = 1 if smoke else max(1, round(overrides["epochs"] * scale))
        config = TrainConfig.for_arch(overrides.pop("arch", "cellnet"), out=str(work),
                                      device=device, **overrides)
        t0 = time.time()
        try:
            main(config, progress=False, prepared=prepared)
        except ModuleNotFoundError as exc:  # the plots need matplotlib; the checkpoint is saved
            logging.warning("%s: no plots (%s)", name, exc)
        except Exception:
            logging.exception("%s failed", name)
            return
        state = torch.load(work / "checkpoint.pt", map_location="cpu", weights_only=False)
        slim = {k: v for k, v in state.items() if k not in ("optimizer", "lr_scheduler")}
        torch.save(slim, f"{out}/{name}.pt")
        Path(f"{out}/{name}.json").write_text(json.dumps(state["metrics"], indent=1))
        logging.info("%s done in %.0f s: MNIST %.2f%%", name, time.time() - t0,
                     100 * state["metrics"]["test_accuracy"])


def probe(device: str = "cuda", steps: int = 300) -> None:
    """Seconds per training step of the student and the teacher (batch 128, augmented, random
    pixels): the figure that sizes the recipes to the time a GPU is lent for."""
    import torch

    from digitscan.trainer.augment import AugmentConfig
    from digitscan.trainer.engine import train_one_epoch
    from digitscan.trainer.models import build_model
    from digitscan.trainer.train import make_optimizer

    x = torch.randint(0, 256, (128 * steps, 1, 28, 28), dtype=torch.uint8, device=device)
    y = torch.randint(0, 11, (128 * steps,), device=device)
    for name, (arch, args) in {"student": ("cellnet", {}), "teacher": ("cnn", TEACHER)}.items():
        model = build_model(arch, **args).to(device).to(memory_format=torch.channels_last)
        opt = make_optimizer(model, 1e-3)
        for n in (20, steps):  # the first pass warms up (cuDNN's search, allocations)
            t0 = time.perf_counter()
            train_one_epoch(model, opt, None, x[: 128 * n], y[: 128 * n], 128, torch.Generator(),
                            1, AugmentConfig(), progress=False)
            seconds = (time.perf_counter() - t0) / n
        print(f"{name}: {1000 * seconds:.2f} ms per step of 128 on {device}", flush=True)


def run(bundle: str, out: str, device: str = "cuda", smoke: bool = False,
        scale: float = 1.0, only: str | None = None) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")  # CUDA in forked children does not work
    groups = GROUPS[-1:] if smoke else GROUPS
    if only:
        groups = [g for g in groups if g[0][0] in only.split(",")]
    procs = [ctx.Process(target=_group, args=(bundle, out, g, device, smoke, scale)) for g in groups]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", default="data")
    p.add_argument("--out", default=".gpu/train.npz")
    p.add_argument("--cell-sets", type=int, default=1)
    p.add_argument("--no-raw", action="store_true", help="leave MNIST's raw training images out")
    sub.add_parser("probe")
    i = sub.add_parser("idx")
    i.add_argument("bundle")
    i.add_argument("--root", default="data")
    r = sub.add_parser("run")
    r.add_argument("bundle")
    r.add_argument("--out", required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--epochs-scale", type=float, default=1.0,
                   help="every recipe's epochs times this (to fit the time a GPU is lent for)")
    r.add_argument("--only", default=None, help="comma-separated names of the groups to run")
    r.add_argument("--smoke", action="store_true", help="one epoch on 1,000 images (a check)")
    args = parser.parse_args()
    if args.cmd == "pack":
        pack(args.data, args.out, args.cell_sets, not args.no_raw)
    elif args.cmd == "probe":
        probe()
    elif args.cmd == "idx":
        idx(args.bundle, args.root)
    else:
        run(args.bundle, args.out, args.device, args.smoke, args.epochs_scale, args.only)
