"""The shipped model meets its card: pinned hash, accuracy measured again here."""

import json

import pytest

from digitscan.export.validate import cpu_session, run_onnx
from digitscan.modelcard import verify_model_file

MODELS = ["digits.onnx", "digits.int8.onnx"]


@pytest.mark.parametrize("name", MODELS)
def test_shipped_model_matches_its_card(name, shipped_model, mnist):
    path = shipped_model.parent / name
    card = verify_model_file(path)  # sha256 pinned
    predictions = run_onnx(cpu_session(path), mnist.test_images)["logits"].argmax(1)
    accuracy = float((predictions == mnist.test_labels).mean())
    assert accuracy == pytest.approx(card["test_accuracy"], abs=1e-9)
    assert accuracy >= 0.995
    assert card["variant"] == ("int8" if "int8" in name else "fp32")


def test_int8_keeps_fp32_answers_and_is_faster(shipped_model):
    card = json.loads((shipped_model.parent / "digits.int8.json").read_text())["parity"]
    assert card["argmax_agreement"] >= 0.995
    assert card["fp32_accuracy"] - card["int8_accuracy"] <= 0.002
    assert card["speedup"] > 1.0  # measured at export time; it ships only because it is faster


def test_checkpoint_and_onnx_agree(shipped_model):
    card = json.loads(shipped_model.with_suffix(".json").read_text())
    from digitscan.hashing import sha256_file

    assert card["checkpoint_sha256"] == sha256_file(shipped_model.parent / "digits.pt")
    assert card["parity"]["argmax_agreement"] == 1.0
