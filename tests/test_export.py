"""Integration: real exports of a real (small) model, real onnxruntime sessions."""

import json

import numpy as np
import onnx
import pytest
import torch

from digitscan.contract import INPUT_NAME, OUTPUT_NAMES
from digitscan.errors import ConfigError, ExportError, ParityError
from digitscan.export.onnx_export import check_graph
from digitscan.export.pipeline import ExportConfig, main
from digitscan.export.runtime import cpu_session
from digitscan.export.validate import ATOL_FOR_VALIDATION, validate_parity
from digitscan.hashing import sha256_file
from digitscan.trainer import load_model
from digitscan.trainer.checkpoint import read_checkpoint

pytestmark = pytest.mark.integration


def test_export_writes_one_file_and_a_truthful_card(mlp_onnx, mlp_run):
    card = json.loads(mlp_onnx.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_file(mlp_onnx)
    assert card["size_bytes"] == mlp_onnx.stat().st_size
    assert card["checkpoint_sha256"] == sha256_file(mlp_run / "checkpoint.pt")
    assert card["input"] == {"name": "pixels", "dtype": "uint8", "shape": ["batch", 1, 28, 28]}
    assert [o["name"] for o in card["outputs"]] == ["logits", "probs"]
    assert card["parity"]["argmax_agreement"] == 1.0
    assert max(card["parity"]["max_abs_diff"].values()) <= ATOL_FOR_VALIDATION
    metrics = json.loads((mlp_run / "metrics.json").read_text())
    assert card["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert not list(mlp_onnx.parent.glob("*.part"))  # no leftovers, no external data


def test_graph_contract_and_metadata(mlp_onnx):
    model = check_graph(mlp_onnx)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["digitscan.labels"]) == [str(d) for d in range(10)]
    assert "bright ink" in props["digitscan.polarity"]
    assert len(props["digitscan.checkpoint_sha256"]) == 64
    assert 0.9 < float(props["digitscan.test_accuracy"]) <= 1


@pytest.mark.parametrize("batch", [1, 3, 257])
def test_dynamic_batch_and_softmax_output(mlp_onnx, batch):
    session = cpu_session(mlp_onnx)
    x = np.random.default_rng(batch).integers(0, 256, (batch, 1, 28, 28), dtype=np.uint8)
    logits, probs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    assert logits.shape == probs.shape == (batch, 10)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert probs.dtype == np.float32


def test_parity_fails_when_one_weight_changes(mlp_onnx, mlp_run, mnist, tmp_path):
    """Test of the test: the validator must catch a perturbed checkpoint."""
    state = read_checkpoint(mlp_run / "checkpoint.pt")
    state["model"]["fc3.bias"][3] += 0.01
    torch.save(state, tmp_path / "perturbed.pt")
    with pytest.raises(ParityError) as err:
        validate_parity(load_model(tmp_path / "perturbed.pt"), mlp_onnx, mnist.test_images,
                        mnist.test_labels)
    message = str(err.value)
    assert "logits: max |Δ| = 0.01 > atol 0.0001" in message
    assert "probs" in message  # every output is listed with its max difference


def test_failed_parity_never_overwrites_a_good_model(mlp_onnx, mlp_run, mnist_root, tmp_path):
    good = tmp_path / "good.onnx"
    good.write_bytes(mlp_onnx.read_bytes())
    good.with_suffix(".json").write_text(mlp_onnx.with_suffix(".json").read_text())
    before = sha256_file(good)
    # A negative tolerance makes the real comparison fail, end to end.
    with pytest.raises(ParityError):
        main(ExportConfig(checkpoint=str(mlp_run / "checkpoint.pt"), out=str(good),
                          data=str(mnist_root), atol=-1.0))
    assert sha256_file(good) == before
    assert json.loads(good.with_suffix(".json").read_text())["sha256"] == before
    assert not list(tmp_path.glob("*.part"))


def test_check_graph_rejects_a_float_input_model(tmp_path):
    x = onnx.helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, ["batch", 1, 28, 28])
    y = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 1, 28, 28])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["pixels"], ["logits"])],
                                   "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="input dtype is FLOAT, expected UINT8"):
        check_graph(tmp_path / "m.onnx")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"out": "x.pt"}, "must end in .onnx"),
    ({"quantize": "int4"}, "Only int8"),
    ({"opset": 7}, "out of range"),
    ({"opset": 14}, "use 18 to 23"),  # torch writes 18 whatever it is asked for: refused
])
def test_bad_export_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ExportConfig(**{"checkpoint": "c.pt", "out": "x.onnx", **kwargs})
