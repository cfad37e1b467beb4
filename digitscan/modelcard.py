"""Reading a model card (``PATH.json`` beside ``PATH.onnx``) and checking that the model
file is the one it pins. Pure Python: the worker uses it without torch or onnx."""

from __future__ import annotations

import json
from pathlib import Path

from digitscan.errors import ModelError
from digitscan.hashing import sha256_file

CARD_FORMAT = "digitscan-model-card/1"


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
