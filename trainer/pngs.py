"""MNIST test digits as PNG files, the way scans arrive: dark ink on white paper."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from digitscan.trainer.data import Mnist


def write_test_pngs(mnist: Mnist, out: str | Path, limit: int | None = None) -> int:
    """Write test image i as ``out/<label>/<i:05d>.png`` (inverted); return how many."""
    out = Path(out)
    images, labels = mnist.test_images[:limit], mnist.test_labels[:limit]
    for label in set(labels.tolist()):
        (out / str(label)).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(255 - image).save(out / str(label) / f"{i:05d}.png")
    return len(images)
