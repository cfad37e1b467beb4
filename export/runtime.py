"""onnxruntime helpers for the exporter, its validator, quantisation and the benches.

Torch-free on purpose: reading an exported model back needs only onnxruntime and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from digitscan.contract import INPUT_NAME
from digitscan.devices import provider_chain, session_providers
from digitscan.errors import ModelError

EVAL_BATCH = 1000


def cpu_session(path: str | Path, provider: str = "cpu") -> ort.InferenceSession:
    """A session for ``path`` on the CPU (or ``provider`` cuda, with the worker's options);
    a missing file or one onnxruntime cannot load is a ``ModelError`` that names the file,
    not onnxruntime's traceback."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model {path} does not exist; write one with `digitscan export`.")
    try:
        return ort.InferenceSession(str(path), providers=session_providers(provider_chain(provider)))
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"onnxruntime cannot load {path} ({reason}); re-export it with "
                         "`digitscan export`.") from None


def as_nchw(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), 1, 28, 28).astype(np.uint8, copy=False)


def run_onnx(session: ort.InferenceSession, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``session`` by name, over ``images`` in batches of EVAL_BATCH."""
    names = [o.name for o in session.get_outputs()]
    chunks = [session.run(names, {INPUT_NAME: as_nchw(images[i : i + EVAL_BATCH])})
              for i in range(0, len(images), EVAL_BATCH)]
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(names)}
