"""One epoch of the seed recipe (MLP, Adam 1e-3, batch 64), two ways, same data, same run:

- seed: the notebook's own loop: torchvision MNIST + ToTensor + Normalize + DataLoader
- digitscan: `trainer.engine.train_one_epoch` over uint8 tensors held in memory, with the
  optimizer and one-cycle schedule that `digitscan train --arch mlp` uses

Prints seconds per epoch for each, the ratio, and the test accuracy after the epoch.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn, optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from digitscan.trainer.config import TrainConfig
from digitscan.trainer.data import load_mnist
from digitscan.trainer.engine import evaluate, train_one_epoch
from digitscan.trainer.models import MLP
from digitscan.trainer.train import as_tensors, make_optimizer, make_schedule


def seed_epoch(root: str) -> float:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(root=root, train=True, download=False, transform=transform)
    loader = DataLoader(train, batch_size=64, shuffle=True)
    # The seed's NeuralNetwork on normalised floats: our MLP minus its uint8 front end.
    model = MLP()
    model.normalize = nn.Identity()
    criterion, optimizer = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=0.001)
    model.train()
    t0 = time.perf_counter()
    for data, target in loader:
        data = data.view(data.size(0), -1)
        optimizer.zero_grad()
        loss = criterion(model(data), target)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def digitscan_epoch(root: str) -> tuple[float, float]:
    mnist = load_mnist(root, fetch=False)
    x, y = as_tensors(mnist.train_images, mnist.train_labels, torch.device("cpu"))
    tx, ty = as_tensors(mnist.test_images, mnist.test_labels, torch.device("cpu"))
    config = TrainConfig.for_arch("mlp", data=root)  # what `digitscan train --arch mlp` runs
    model = MLP()
    optimizer = make_optimizer(model, config.lr)
    scheduler = make_schedule(config, optimizer, -(-len(x) // config.batch_size))
    t0 = time.perf_counter()
    train_one_epoch(model, optimizer, scheduler, x, y, config.batch_size,
                    torch.Generator().manual_seed(0), 1, progress=False)
    seconds = time.perf_counter() - t0
    return seconds, evaluate(model, tx, ty).accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data", help="MNIST root (default: data)")
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed each way (default: 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both loops (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    seed_times, ours, accs = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        seed_times.append(seed_epoch(args.data))
        s, acc = digitscan_epoch(args.data)
        ours.append(s)
        accs.append(acc)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    print(f"train epoch, seed recipe (MLP, batch 64), {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"  seed loop (DataLoader + ToTensor + Normalize): {med(seed_times):6.2f} s/epoch")
    print(f"  digitscan (tensors in memory):                 {med(ours):6.2f} s/epoch "
          f"(test accuracy after 1 epoch {100 * med(accs):.2f}%)")
    print(f"  speed-up: {med(seed_times) / med(ours):.1f}x")
    print("  each run (seed / digitscan, s): "
          + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(seed_times, ours, strict=True)))


if __name__ == "__main__":
    main()
