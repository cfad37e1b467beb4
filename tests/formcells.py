"""MNIST test digits re-rendered as scanned form cells: dark ink on light paper, scaled,
off-centre, tinted, noisy, JPEG-compressed. Deterministic for a given seed."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def form_cell(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """One 28x28 MNIST digit (bright on black) -> encoded image bytes of a form cell."""
    size = int(28 * rng.uniform(1.2, 5.0))
    alpha = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC),
                       dtype=np.float32) / 255.0
    height = size + int(rng.integers(6, size // 2 + 8))
    width = size + int(rng.integers(6, size + 8))
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    paper, ink = rng.uniform(190, 255), rng.uniform(0, 90)
    cell = np.full((height, width), paper, dtype=np.float32)
    region = cell[top : top + size, left : left + size]
    cell[top : top + size, left : left + size] = region - (region - ink) * alpha
    cell += rng.normal(0, rng.uniform(0, 10), cell.shape)
    gray = np.clip(cell, 0, 255).astype(np.uint8)
    mode = rng.choice(["L", "RGB", "P"])
    if mode == "RGB":  # slightly tinted paper and ink, as from a colour scanner
        tint = rng.uniform(0.9, 1.0, 3)
        image = Image.fromarray((gray[..., None] * tint).astype(np.uint8), "RGB")
    else:
        image = Image.fromarray(gray, "L")
    buf = io.BytesIO()
    if mode == "P":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(buf, "PNG")
    else:
        image.save(buf, "JPEG", quality=int(rng.integers(55, 95)))
    return buf.getvalue()


def form_cells(images: np.ndarray, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [form_cell(d, rng) for d in images]
