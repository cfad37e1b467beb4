"""Static int8 quantisation with onnxruntime, calibrated on MNIST training images,
accepted only if it keeps the fp32 model's answers. Weights in 7 bits, so that the model
reads alike on every x86 CPU; the convolutions at the image's full resolution that int8
does not speed up stay fp32."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from digitscan.contract import INPUT_NAME
from digitscan.errors import QuantizationError
from digitscan.export.runtime import as_nchw, cpu_session, run_onnx
from digitscan.modelcard import int8_gate

CALIBRATION_IMAGES = 2000


class MnistCalibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray, batch: int = 100):
        self._batches = iter(
            [{INPUT_NAME: as_nchw(images[i : i + batch])} for i in range(0, len(images), batch)]
        )

    def get_next(self):
        return next(self._batches, None)


@dataclass
class QuantReport:
    fp32_accuracy: float
    int8_accuracy: float
    argmax_agreement: float
    fp32_images_per_s: float
    int8_images_per_s: float
    calibration_images: int

    @property
    def speedup(self) -> float:
        return self.int8_images_per_s / self.fp32_images_per_s

    def to_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


# Nodes after which the feature maps are smaller than the image.
_DOWNSAMPLING = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")


def fp32_convs(path: str | Path) -> list[str]:
    """The convolutions that stay fp32 (nodes are in topological order): the first, and the
    depthwise ones (a filter per channel) before the first downsampling."""
    graph = onnx.load(str(path)).graph
    weights = {t.name: t.dims for t in graph.initializer}
    names: list[str] = []
    for node in graph.node:
        if node.op_type in _DOWNSAMPLING:
            break
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if any(s > 1 for s in attrs.get("strides", [])):
            break
        dims = weights.get(node.input[1], [])
        depthwise = attrs.get("group", 1) > 1 and len(dims) == 4 and dims[1] == 1
        if not names or depthwise:
            names.append(node.name)
    return names


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calib_images: np.ndarray) -> None:
    """Per-channel int8 weights and uint8 activations.

    ``reduce_range``: weights in 7 bits. On x86 CPUs without VNNI (AVX2, AVX-512 before
    Cascade Lake) onnxruntime multiplies uint8 by int8 with instructions that add pairs into
    16 bits and saturate; with 8-bit weights the model exported on a VNNI machine read worse
    elsewhere (one AVX2 core, selection sets of 10,000 cells, 2026-11-27: MNIST 99.56 %
    against fp32's 99.66, boxed 99.14 against 99.24, and a small MLP fell under the int8
    gate), with 7 bits as fp32 (99.64 / 99.16).

    The first convolution stays fp32: it reads the image itself (one channel, 4.5 % of the
    shipped model's multiply-adds); without it the int8 model ran 350 rather than 405 us an
    image on that core, and read 99.65 / 99.19. Calibrating on cells instead of MNIST, more
    images, percentile or entropy ranges changed nothing.

    So does a depthwise convolution at full resolution: onnxruntime's int8 depthwise kernel
    does not use the dot-product instructions, and on the shipped model's 24 channels at
    28x28 it took 17 of the int8 model's 44.6 us an image (an AMD EPYC with AVX-512 VNNI,
    one thread, batches of 32; the same layer in fp32 ~4.5). With that layer in fp32 the int8
    model ran 28.8-30.1 us an image instead of 42.6, with the same MNIST answers. The later
    depthwise layers (14x14, 7x7) are faster in int8: all of them in fp32, 37.9 us."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out_path), MnistCalibration(calib_images),
            quant_format=QuantFormat.QOperator, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=fp32_convs(pre),
        )


def images_per_second(path: str | Path, images: np.ndarray, batch: int = 64,
                      repeats: int = 5) -> float:
    """Median throughput of one CPU session at ``batch`` over ``repeats`` passes."""
    session = cpu_session(path)
    x = as_nchw(images[:batch])
    session.run(None, {INPUT_NAME: x})  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(20):
            session.run(None, {INPUT_NAME: x})
        rates.append(20 * batch / (time.perf_counter() - t0))
    return float(np.median(rates))


def check_int8(fp32_path: str | Path, int8_path: str | Path, test_images: np.ndarray,
               test_labels: np.ndarray, calibration_images: int) -> QuantReport:
    fp32 = run_onnx(cpu_session(fp32_path), test_images)["logits"].argmax(1)
    int8 = run_onnx(cpu_session(int8_path), test_images)["logits"].argmax(1)
    report = QuantReport(
        fp32_accuracy=float((fp32 == test_labels).mean()),
        int8_accuracy=float((int8 == test_labels).mean()),
        argmax_agreement=float((fp32 == int8).mean()),
        fp32_images_per_s=images_per_second(fp32_path, test_images),
        int8_images_per_s=images_per_second(int8_path, test_images),
        calibration_images=calibration_images,
    )
    failures = int8_gate(report.fp32_accuracy, report.int8_accuracy, report.argmax_agreement)
    if failures:
        raise QuantizationError(f"int8 model {int8_path} rejected: " + "; ".join(failures)
                                + ". Keep the fp32 model.")
    return report
