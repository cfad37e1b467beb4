"""The shipped model meets its card: pinned hash, accuracy measured again here."""

import json

import numpy as np
import pytest

from digitscan.export.runtime import cpu_session, run_onnx
from digitscan.modelcard import verify_model_file

MODELS = ["digits.onnx", "digits.int8.onnx"]


@pytest.mark.parametrize("name", MODELS)
def test_shipped_model_matches_its_card(name, shipped_model, mnist):
    path = shipped_model.parent / name
    card = verify_model_file(path)  # sha256 pinned
    predictions = run_onnx(cpu_session(path), mnist.test_images)["logits"].argmax(1)
    accuracy = float((predictions == mnist.test_labels).mean())
    assert accuracy == pytest.approx(card["test_accuracy"], abs=1e-9)
    assert accuracy >= 0.994  # cellnet 99.43 % (11 classes; "not a digit" counts as wrong)
    assert card["variant"] == ("int8" if "int8" in name else "fp32")


def test_int8_keeps_fp32_answers(shipped_model, mnist):
    """Measured here, not read from the card: the int8 model gives the fp32 model's answers."""
    fp32, int8 = (run_onnx(cpu_session(shipped_model.parent / name), mnist.test_images)["logits"]
                  .argmax(1) for name in MODELS)
    assert (fp32 == int8).mean() >= 0.995
    assert (fp32 == mnist.test_labels).mean() - (int8 == mnist.test_labels).mean() <= 0.002


def test_checkpoint_and_onnx_agree(shipped_model, mnist):
    """The shipped checkpoint is the one the card names, and it computes what the ONNX file does."""
    from digitscan.export.validate import ATOL_FOR_VALIDATION, run_torch
    from digitscan.hashing import sha256_file
    from digitscan.trainer import load_model

    card = json.loads(shipped_model.with_suffix(".json").read_text())
    checkpoint = shipped_model.parent / "digits.pt"
    assert card["checkpoint_sha256"] == sha256_file(checkpoint)
    images = mnist.test_images[:2000]
    expected = run_torch(load_model(checkpoint), images)
    actual = run_onnx(cpu_session(shipped_model), images)
    for name in ("logits", "probs"):
        assert np.abs(actual[name] - expected[name]).max() <= ATOL_FOR_VALIDATION
    assert (actual["logits"].argmax(1) == expected["logits"].argmax(1)).all()
