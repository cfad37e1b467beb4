"""Reading a model card (``PATH.json`` beside ``PATH.onnx``) and checking that the model
file is the one it pins. Pure Python: the worker uses it without torch or onnx."""

from __future__ import annotations

import json
from pathlib import Path

from digitscan.errors import ModelError
from digitscan.hashing import sha256_file

CARD_FORMAT = "digitscan-model-card/1"
# The gate an int8 model passes to stand in for its fp32 original (export, validate, and the
# worker's choice of the int8 file on the CPU).
MAX_ACCURACY_DROP = 0.002  # 0.2 points
MIN_ARGMAX_AGREEMENT = 0.995


def card_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def read_card(model_path: str | Path) -> dict:
    card_path = card_path_for(model_path)
    if not card_path.is_file():
        raise ModelError(
            f"model card {card_path} is missing; every model needs the card written by "
            f"`digitscan export` beside it."
        )
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {card_path} is not valid JSON ({exc}).") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or "sha256" not in card:
        raise ModelError(f"{card_path} is not a digitscan model card (format {CARD_FORMAT}).")
    return card


def verify_model_file(model_path: str | Path) -> dict:
    """Return the card if ``model_path`` has the sha256 its card pins; else raise ModelError."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(
            f"model {model_path} does not exist; pass --model or set DIGITSCAN_MODEL to an .onnx "
            "file written by `digitscan export`."
        )
    card = read_card(model_path)
    actual = sha256_file(model_path)
    if actual != card["sha256"]:
        raise ModelError(
            f"model {model_path} has sha256 {actual} but its card {card_path_for(model_path)} pins "
            f"{card['sha256']}; the file was changed or replaced. Re-export it or restore the "
            "original."
        )
    return card


def int8_gate(fp32_accuracy: float, int8_accuracy: float, argmax_agreement: float) -> list[str]:
    """What keeps an int8 model from standing in for its fp32 original (empty: nothing).
    One gate for `export --quantize int8` and for `validate` of an int8 file."""
    failures = []
    if fp32_accuracy - int8_accuracy > MAX_ACCURACY_DROP:
        failures.append(f"accuracy {100 * int8_accuracy:.2f}% vs fp32 "
                        f"{100 * fp32_accuracy:.2f}% (at most 0.2 points lower allowed)")
    if argmax_agreement < MIN_ARGMAX_AGREEMENT:
        failures.append(f"argmax agrees with fp32 on {100 * argmax_agreement:.2f}% of the "
                        f"test set ({100 * MIN_ARGMAX_AGREEMENT:.1f}% required)")
    return failures


def int8_stands_in(model_path: str | Path) -> bool:
    """True if ``model_path`` is an int8 model whose card records that it passed the gate
    against its fp32 original (the card is written only after the gate passed; a card
    edited to say otherwise, or another variant, is False)."""
    try:
        card = read_card(model_path)
    except ModelError:
        return False
    parity = card.get("parity") or {}
    try:
        return card.get("variant") == "int8" and not int8_gate(
            float(parity["fp32_accuracy"]), float(parity["int8_accuracy"]),
            float(parity["argmax_agreement"]))
    except (KeyError, TypeError, ValueError):
        return False
