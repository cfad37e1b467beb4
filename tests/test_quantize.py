"""Integration: int8 quantisation with onnxruntime, and the gate that accepts or refuses it."""

import pytest
from click.testing import CliRunner

from digitscan.cli import main as cli
from digitscan.errors import QuantizationError
from digitscan.export.pipeline import ExportConfig, int8_path_for, main
from digitscan.export.quantize import check_int8
from digitscan.modelcard import verify_model_file

pytestmark = pytest.mark.integration


def test_int8_export_writes_its_own_card(mlp_run, mnist_root, tmp_path):
    out = tmp_path / "mlp.onnx"
    cards = main(ExportConfig(checkpoint=str(mlp_run / "checkpoint.pt"), out=str(out),
                              data=str(mnist_root), quantize="int8"))
    assert [c["variant"] for c in cards] == ["fp32", "int8"]
    card = verify_model_file(int8_path_for(out))  # pinned like the fp32 model
    assert card["parity"]["against"] == "mlp.onnx"
    assert card["parity"]["argmax_agreement"] >= 0.995
    assert int8_path_for(out).stat().st_size < out.stat().st_size / 2

    # validate accepts what export accepted, by the same gate, and says so in one line
    runner = CliRunner()
    ckpt = str(mlp_run / "checkpoint.pt")
    result = runner.invoke(cli, ["validate", ckpt, str(int8_path_for(out)), "--data", str(mnist_root)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("int8 ok: accuracy ") and "{" not in result.output
    result = runner.invoke(cli, ["validate", ckpt, str(out), "--data", str(mnist_root)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("parity ok: max |Δ| logits ") and "{" not in result.output


def test_the_gate_refuses_a_model_that_answers_differently(mlp_onnx, shipped_model, mnist):
    """Test of the test: a different network is not an acceptable int8 of the MLP."""
    with pytest.raises(QuantizationError, match="argmax agrees with fp32 on .* required"):
        check_int8(mlp_onnx, shipped_model, mnist.test_images, mnist.test_labels, 0)


def test_the_full_resolution_convolutions_int8_does_not_speed_up_stay_fp32(shipped_model, mnist,
                                                                           tmp_path):
    """The first convolution reads the image itself, and onnxruntime's int8 depthwise kernel
    at 28x28 is slower than fp32 (the depthwise ones after a pooling stay int8); and the
    weights are in 7 bits, so that CPUs without VNNI read the model as those with it do."""
    import onnx

    from digitscan.export.quantize import quantize_int8

    out = tmp_path / "q.onnx"
    quantize_int8(shipped_model, out, mnist.train_images[:200])
    for path in (out, int8_path_for(shipped_model)):  # what export writes, and what ships
        graph = onnx.load(str(path)).graph
        convs = [n for n in graph.node if "Conv" in n.op_type]
        kinds = [n.op_type for n in convs]
        assert kinds == ["Conv"] * 2 + ["QLinearConv"] * 8, kinds
        groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
        assert groups[:2] == [1, 24] and max(groups[2:]) == 64  # depthwise at 14x14 and 7x7: int8
        # 7-bit weights (reduce_range): 2 x 255 x 64 fits the 16 bits that CPUs without VNNI
        # add pairs of products into
        weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and t.name.endswith("_quantized")]
        assert len(weights) >= 8 and all(-64 <= int(w.min()) and int(w.max()) <= 64 for w in weights)
