"""The model's public contract, torch-free: what every exported graph takes and returns.

Shared by the trainer (normalisation constants), the exporter and its validator (names,
opset), the card, and the worker, which asks for outputs by name and checks the card.
"""

from __future__ import annotations

import numpy as np

# MNIST training-set statistics, as in the seed notebook's transforms.Normalize.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

INPUT_NAME = "pixels"
LOGITS, PROBS = "logits", "probs"
OUTPUT_NAMES = (LOGITS, PROBS)
DIGITS = [str(d) for d in range(10)]
NOT_A_DIGIT = "not a digit"  # the eleventh class, where a model has it
NOT_A_DIGIT_CLASS = len(DIGITS)  # its index: the column after the ten digits
POLARITY = "MNIST: bright ink (255) on black (0)"
NORMALISATION = {"scale": 1 / 255, "mean": MNIST_MEAN, "std": MNIST_STD,
                 "where": "inside the graph: (pixels / 255 - mean) / std"}
INPUT_SPEC = {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 1, 28, 28]}


def labels_for(classes: int) -> list[str]:
    """The label of each output column: ten digits, then "not a digit" if there are 11."""
    return DIGITS + [NOT_A_DIGIT] * (classes - len(DIGITS))


def read_answers(probs: np.ndarray, not_digit_above: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """How the worker reads probabilities [N, classes]: per row the digit (-1 for "not a
    digit") and its probability. The answer is "not a digit" only when that class beats every
    digit *and* exceeds ``not_digit_above`` (the card's, chosen on held-out data at training):
    a cell the model doubts is a digit, but cannot rule out, keeps its best guess, and a
    guess that weak already falls below the review threshold, so a person sees it either way
    with the guess in hand. 0 is the plain argmax over all classes."""
    probs = np.asarray(probs)
    best = probs[:, : len(DIGITS)].argmax(1)
    confidence = probs[np.arange(len(probs)), best]
    digit = best.astype(np.int64)
    if probs.shape[1] > NOT_A_DIGIT_CLASS:
        p_not = probs[:, NOT_A_DIGIT_CLASS]
        digit[(p_not > confidence) & (p_not > not_digit_above)] = -1
    return digit, confidence


def output_specs(classes: int) -> list[dict]:
    return [{"name": name, "dtype": "float32", "shape": ["batch", classes]} for name in OUTPUT_NAMES]

DEFAULT_OPSET = 18
# torch's dynamo exporter writes opset 18 and newer; older requests are refused, not
# silently upgraded.
MIN_OPSET, MAX_OPSET = 18, 23
