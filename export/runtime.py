"""onnxruntime helpers for the exporter, its validator, quantisation and the benches.

Torch-free on purpose: reading an exported model back needs only onnxruntime and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from digitscan.contract import INPUT_NAME

EVAL_BATCH = 1000


def cpu_session(path: str | Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def as_nchw(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), 1, 28, 28).astype(np.uint8, copy=False)


def run_onnx(session: ort.InferenceSession, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``session`` by name, over ``images`` in batches of EVAL_BATCH."""
    names = [o.name for o in session.get_outputs()]
    chunks = [session.run(names, {INPUT_NAME: as_nchw(images[i : i + EVAL_BATCH])})
              for i in range(0, len(images), EVAL_BATCH)]
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(names)}
