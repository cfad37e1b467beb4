"""Classify one chunk: plain functions, testable without Celery or Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from digitscan.errors import ImageError, ImageTooLarge, UnreadableImage
from digitscan.worker.imaging import prepare
from digitscan.worker.messages import Chunk
from digitscan.worker.results import result_line
from digitscan.worker.settings import Limits


class Predictor(Protocol):
    sha256: str

    def predict(self, digits: np.ndarray) -> np.ndarray: ...


def read_path(path: str, limits: Limits) -> bytes:
    """Bytes of a by-reference image, refusing oversized files before reading them."""
    try:
        p = Path(path)
        size = p.stat().st_size
        if size > limits.max_bytes:
            raise ImageTooLarge(f"{size} bytes; the limit is {limits.max_bytes}")
        return p.read_bytes()
    except ImageError:
        raise
    except OSError as exc:
        raise UnreadableImage(f"{exc.strerror or exc} (is the storage mounted on this worker?)"
                              ) from None


def classify_chunk(chunk: Chunk, classifier: Predictor, limits: Limits) -> list[dict]:
    """One result line per item: a digit and its probability, or an error. Never raises
    for a bad image: it gets its own error line and its neighbours are unaffected."""
    results, digits, ok = [], [], []
    for item in chunk.items:
        line = result_line(chunk.job, item.index, item.source, classifier.sha256)
        try:
            data = item.data if item.path is None else read_path(item.path, limits)
            digits.append(prepare(data, limits))
            ok.append(line)
        except ImageError as exc:
            line["error"] = str(exc)
        results.append(line)
    if digits:
        probs = classifier.predict(np.stack(digits))
        for line, p in zip(ok, probs):
            line["digit"] = int(p.argmax())
            line["confidence"] = round(float(p.max()), 6)
    return results
