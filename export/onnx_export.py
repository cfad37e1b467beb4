"""Checkpoint module -> one self-contained ONNX file with the public contract."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import torch
from torch import nn

from digitscan.contract import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES
from digitscan.errors import ExportError

log = logging.getLogger(__name__)

# A batch-1 example lets the exporter specialise the batch axis to 1; 4 keeps it symbolic.
EXAMPLE_BATCH = 4


class WithProbs(nn.Module):
    """Adds the softmax output, so consumers need no post-processing either."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels)
        return logits, torch.softmax(logits, dim=1)


def export_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET) -> None:
    """Write ``model`` (eval mode, uint8 [batch,1,28,28] in) to ``path`` as a single file."""
    example = torch.randint(0, 256, (EXAMPLE_BATCH, 1, 28, 28), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    try:
        torch.onnx.export(
            WithProbs(model).eval(), (example,), str(path), dynamo=True, external_data=False,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=opset,
            dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1)}}, verbose=False,
        )
    except Exception as exc:  # the exporter raises many kinds; all mean the same to a user
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {exc}") from exc


def check_graph(path: str | Path) -> onnx.ModelProto:
    """Full onnx.checker, strict shape inference, and the input/output contract."""
    path = str(path)
    try:
        onnx.checker.check_model(path, full_check=True)
        model = onnx.load(path)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{path} fails the ONNX checks: {exc}") from None
    problems = []
    inputs = [i for i in model.graph.input]
    if [i.name for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs are {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    else:
        t = inputs[0].type.tensor_type
        if t.elem_type != onnx.TensorProto.UINT8:
            problems.append(f"input dtype is {onnx.TensorProto.DataType.Name(t.elem_type)}, "
                            "expected UINT8")
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        if len(dims) != 4 or not isinstance(dims[0], str) or dims[1:] != [1, 28, 28]:
            problems.append(f"input shape is {dims}, expected [batch, 1, 28, 28] with a symbolic "
                            "batch axis")
    if [o.name for o in model.graph.output] != list(OUTPUT_NAMES):
        problems.append(f"outputs are {[o.name for o in model.graph.output]}, "
                        f"expected {list(OUTPUT_NAMES)}")
    if problems:
        raise ExportError(f"{path} breaks the model contract: " + "; ".join(problems))
    return model


def stamp_metadata(path: str | Path, props: dict[str, str]) -> None:
    """Replace the model's metadata_props; the graph itself is left byte-for-byte alone."""
    model = onnx.load(str(path))
    graph_before = model.graph.SerializeToString()
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=str(value))
    assert model.graph.SerializeToString() == graph_before
    onnx.save(model, str(path))
