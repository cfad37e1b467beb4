"""Classify one chunk: plain functions, testable without Celery or Redis."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from digitscan.contract import NOT_A_DIGIT_CLASS as NOT_A_DIGIT
from digitscan.contract import read_answers
from digitscan.errors import (
    ChangedSinceSubmission,
    ImageError,
    InputsUnreachable,
    NotADigit,
    ProcessingFailed,
    StorageUnreachable,
    UnreadableImage,
)
from digitscan.files import OPEN_FLAGS, read_fd, refused, too_large
from digitscan.worker import storage
from digitscan.worker.imaging import BUGS, prepare, time_bounds
from digitscan.worker.messages import Chunk
from digitscan.worker.results import result_line
from digitscan.worker.settings import Limits

log = logging.getLogger(__name__)


class Predictor(Protocol):
    sha256: str
    review_below: float  # the model card's threshold, when the job sets none
    not_digit_above: float  # the card's: "not a digit" only above this probability

    def predict(self, digits: np.ndarray) -> np.ndarray: ...


def read_path(path: str, limits: Limits, expected_size: int | None = None) -> bytes:
    """Bytes of a by-reference image, refusing oversized files before reading them.

    A file missing from a folder this worker can read is that image's error. A folder it
    cannot see at all (storage not mounted here, no permission) is this worker's fault,
    not the image's: ``InputsUnreachable``, so the chunk goes to a worker that can.
    """
    if storage.is_url(path):
        try:
            return storage.read(path, limits.max_bytes, expected_size)
        except StorageUnreachable as exc:  # this worker's fault: let one that can reach it try
            raise InputsUnreachable(str(exc)) from None
    try:
        # One lookup of the path (open, then fstat), with os calls: 7.0 us an MNIST PNG where
        # pathlib's stat and read_bytes took 16.5, in every file a scan sends by path.
        fd = os.open(path, OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise UnreadableImage(os.strerror(errno.EISDIR))
            why = refused(st, limits.max_bytes)
            if why:
                raise why
            size = st.st_size
            if expected_size is not None and size != expected_size:
                raise ChangedSinceSubmission(f"{size} bytes now, {expected_size} when submitted")
            data = read_fd(fd, size, limits.max_bytes)
        finally:
            os.close(fd)
        if len(data) > limits.max_bytes:
            raise too_large(len(data), limits.max_bytes)
        return data
    except ImageError:
        raise
    except OSError as exc:
        folder = Path(path).parent
        if not (folder.is_dir() and os.access(folder, os.R_OK | os.X_OK)):
            raise InputsUnreachable(f"cannot read {folder} on this worker ({exc.strerror or exc}); "
                                    "is the shared storage mounted here?") from None
        raise UnreadableImage(exc.strerror or str(exc)) from None


def read_probs(line: dict, p, review_below: float, not_digit_above: float = 0.0) -> None:
    """Fill ``line`` from one row of probabilities: the likeliest digit and its probability,
    flagged for review below the threshold; or "not a digit" when the model's eleventh
    class wins above ``not_digit_above`` (``read_answers``; the line then keeps no digit: a
    guess would be read as an answer)."""
    digit, confidence = read_answers(np.asarray(p)[None], not_digit_above)
    write_answer(line, int(digit[0]), float(confidence[0]), p, review_below)


def write_answer(line: dict, digit: int, confidence: float, p, review_below: float) -> None:
    if digit < 0:
        line["error"] = str(NotADigit(f"probability {float(p[NOT_A_DIGIT]):.3f}"))
        return
    line["digit"] = digit
    line["confidence"] = round(confidence, 6)
    line["review"] = confidence < review_below


def classify_chunk(chunk: Chunk, classifier: Predictor, limits: Limits,
                   observe: Callable[[str, float], None] | None = None) -> list[dict]:
    """One result line per item: a digit and its probability, or an error. Never raises
    for a bad image: it gets its own error line and its neighbours are unaffected. Review
    threshold: the job's (carried by the chunk), else the classifier's. ``observe`` gets
    each stage's seconds (read, decode, normalise per image; model per chunk)."""
    review_below = classifier.review_below if chunk.review_below is None else chunk.review_below
    results, digits, ok = [], [], []
    with time_bounds(limits.timeout_s):  # each image's own bound, one handler for them all
        for item in chunk.items:
            line = result_line(chunk.job, item.index, item.source, classifier.sha256)
            try:
                if item.path is None:
                    data = item.data
                else:
                    t0 = time.perf_counter()
                    data = read_path(item.path, limits, item.size)
                    if observe is not None:
                        observe("read", time.perf_counter() - t0)
                digits.append(prepare(data, limits, observe))
                ok.append(line)
            except ImageError as exc:
                line["error"] = str(exc)
            except BUGS as exc:
                # A bug met on one image (not a crash: those take the chunk, and the poison
                # count handles them) costs that image only, not its 255 neighbours; the
                # worker's log keeps the traceback for whoever fixes it. Only the kinds a
                # bug in array code raises: a time limit or an unreachable store still ends
                # the chunk, as it must.
                log.exception("job %s item %d (%s): unexpected failure", chunk.job, item.index,
                              item.source)
                first = (str(exc).splitlines() or [""])[0][:200]  # OpenCV's run on for lines
                line["error"] = str(ProcessingFailed(f"{type(exc).__name__}: {first}; this is a "
                                                     "bug, the worker's log has the details"))
            results.append(line)
    if digits:
        t0 = time.perf_counter()
        probs = classifier.predict(np.stack(digits))
        if observe is not None:
            observe("model", time.perf_counter() - t0)
        digit, confidence = read_answers(probs, classifier.not_digit_above)
        for line, p, d, c in zip(ok, probs, digit.tolist(), confidence.tolist()):
            write_answer(line, d, c, p, review_below)
    return results
