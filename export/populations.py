"""The model measured on what users scan, through the worker's real path: image bytes,
decode, cell cleanup and normalisation (``worker.imaging.prepare``), then the model.

Populations (all with fixed seeds; writers and fonts never seen in training):

    mnist      the MNIST test set as PNG files (dark ink on white)
    form       MNIST test digits as plain-paper form cells (any size, off-centre, JPEG)
    boxed      MNIST test digits written in printed boxes and comb fields
    printed    machine-printed digits in the held-out fonts
    negative   cells with no digit: letters and symbols in the held-out fonts, scribbles,
               small pictures, digits crossed out

A digit counts as read right when the result has that digit (an error or "not a digit"
counts as wrong). A cell is *flagged* when a person would look at it: an error (not a
digit, no digit found, ...) or review: true. Torch-free: numpy, Pillow, OpenCV, onnxruntime.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitscan.contract import NOT_A_DIGIT_CLASS, read_answers
from digitscan.errors import ImageError
from digitscan.trainer import cells
from digitscan.trainer.data import Mnist
from digitscan.worker.imaging import prepare

POPULATIONS = ("mnist", "form", "boxed", "printed", "negative")
NOT_A_DIGIT = NOT_A_DIGIT_CLASS
# Thresholds at which the error-reject curve is read.
CURVE = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)


def population(name: str, mnist: Mnist, n: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """``n`` cells of one population as encoded image bytes, and their labels (10: no digit)."""
    rng = np.random.default_rng(seed)
    if name in ("mnist", "form", "boxed"):
        pick = np.arange(n) if n <= len(mnist.test_images) else rng.integers(0, len(mnist.test_images), n)
        digits, labels = mnist.test_images[pick], mnist.test_labels[pick].astype(np.int64)
        if name == "mnist":
            return [_png(255 - d) for d in digits], labels
        if name == "form":
            return cells.form_cells(digits, seed), labels
        return cells.boxed_cells(digits, seed + 1), labels
    _, test_fonts = cells.split_fonts()
    if name == "printed":
        raw, labels = cells.printed_cells(test_fonts, n, seed + 2)
        return raw, labels.astype(np.int64)
    if name == "negative":
        raw, _ = cells.negative_cells(test_fonts, mnist.test_images, n, seed + 3)
        return raw, np.full(n, NOT_A_DIGIT, np.int64)
    raise ValueError(f"unknown population {name!r}; one of {', '.join(POPULATIONS)}")


def _png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Outcome:
    """Per cell: the digit read (-1 for none), its calibrated probability, and the label."""

    digit: np.ndarray
    confidence: np.ndarray
    labels: np.ndarray


def read(cells_: list[bytes], labels: np.ndarray,
         predict: Callable[[np.ndarray], np.ndarray], not_digit_above: float = 0.0) -> Outcome:
    """Run cells through prepare and ``predict`` (uint8 [N,28,28] -> probs [N,classes]),
    read as the worker reads them (``digitscan.contract.read_answers``)."""
    digit = np.full(len(cells_), -1)
    confidence = np.zeros(len(cells_), np.float32)
    ok, prepared = [], []
    for i, data in enumerate(cells_):
        try:
            prepared.append(prepare(data))
            ok.append(i)
        except ImageError:
            pass  # an error result: no digit
    if prepared:
        best, p_best = read_answers(predict(np.stack(prepared)), not_digit_above)
        is_digit = best >= 0
        idx = np.asarray(ok)
        digit[idx[is_digit]] = best[is_digit]
        confidence[idx[is_digit]] = p_best[is_digit]
    return Outcome(digit, confidence, labels)


def summarise(outcome: Outcome, review_below: float) -> dict:
    """Accuracy, flagged share, accuracy among what was not flagged, and the error-reject curve."""
    is_digits = outcome.labels < NOT_A_DIGIT
    answered = outcome.digit >= 0
    flagged = ~answered | (outcome.confidence < review_below)
    if not is_digits.any():  # the population with no digits
        return {"cells": len(outcome.labels), "flagged": float(flagged.mean()),
                "answered_as_digit": float(answered.mean()),
                "confident_digit_answers": float((answered & ~flagged).mean())}
    right = outcome.digit == outcome.labels
    curve = []
    for t in CURVE:
        kept = answered & (outcome.confidence >= t)
        curve.append({"review_below": t, "sent_to_review": round(float(1 - kept.mean()), 5),
                      "error_among_accepted": round(float(1 - right[kept].mean()) if kept.any() else 0.0, 5)})
    accepted = ~flagged
    return {"cells": len(outcome.labels), "accuracy": float(right.mean()),
            "flagged": float(flagged.mean()),
            "accuracy_when_not_flagged": float(right[accepted].mean()) if accepted.any() else 0.0,
            "error_reject_curve": curve}


def expected_calibration_error(outcomes: list[Outcome], bins: int = 15) -> float:
    """ECE of the digit answers over the digit populations: |confidence - accuracy|,
    weighted by how many answers fall in each confidence bin."""
    conf = np.concatenate([o.confidence[(o.digit >= 0) & (o.labels < NOT_A_DIGIT)] for o in outcomes])
    right = np.concatenate([(o.digit == o.labels)[(o.digit >= 0) & (o.labels < NOT_A_DIGIT)]
                            for o in outcomes])
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(conf[inside].mean() - right[inside].mean())
    return float(ece)


def measure(predict: Callable[[np.ndarray], np.ndarray], mnist: Mnist, sizes: dict[str, int],
            review_below: float, seed: int = 0, not_digit_above: float = 0.0) -> dict:
    """Every population in ``sizes``, summarised, and the calibration error over the digits."""
    outcomes, report = {}, {}
    for name, n in sizes.items():
        raw, labels = population(name, mnist, n, seed)
        outcomes[name] = read(raw, labels, predict, not_digit_above)
        report[name] = summarise(outcomes[name], review_below)
    digit_outcomes = [o for name, o in outcomes.items() if name != "negative"]
    report["expected_calibration_error"] = expected_calibration_error(digit_outcomes)
    if "negative" in outcomes:
        digits_flagged = np.concatenate([(o.digit < 0) | (o.confidence < review_below)
                                         for o in digit_outcomes])
        report["digits_flagged"] = float(digits_flagged.mean())
    report["review_below"] = review_below
    report["not_digit_above"] = not_digit_above
    report["seed"] = seed
    return report
