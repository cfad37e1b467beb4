"""Parity proof: the ONNX file computes the checkpoint's function, or this raises.

Checks output names, then shapes, then values, on the whole MNIST test set and on
random uint8 batches of several sizes; collects every failure and raises once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from digitscan.contract import OUTPUT_NAMES
from digitscan.errors import ParityError
from digitscan.export.onnx_export import WithProbs
from digitscan.export.runtime import EVAL_BATCH, as_nchw, cpu_session, run_onnx

# float32 logits of a small network agree to ~1e-6 across runtimes; 1e-4 leaves room for
# kernel differences while still catching any changed weight.
ATOL_FOR_VALIDATION = 1e-4
PARITY_BATCH_SIZES = (1, 2, 7, 64, 1000)


@dataclass
class ParityReport:
    atol: float
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    argmax_agreement: float = 0.0
    torch_accuracy: float = 0.0
    onnx_accuracy: float = 0.0
    test_images: int = 0
    random_batch_sizes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def run_torch(model: nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    wrapped = WithProbs(model).eval()
    outs = [wrapped(torch.from_numpy(as_nchw(images[i : i + EVAL_BATCH]).copy()))
            for i in range(0, len(images), EVAL_BATCH)]
    return {name: torch.cat([o[k] for o in outs]).numpy() for k, name in enumerate(OUTPUT_NAMES)}


def validate_parity(model: nn.Module, onnx_path: str | Path, test_images: np.ndarray,
                    test_labels: np.ndarray, atol: float = ATOL_FOR_VALIDATION,
                    seed: int = 0, provider: str = "cpu") -> ParityReport:
    """Compare ``model`` and the ONNX file run on onnxruntime's ``provider``; return the
    figures or raise ParityError."""
    session = cpu_session(onnx_path, provider)
    report = ParityReport(atol=atol, test_images=len(test_images),
                          random_batch_sizes=list(PARITY_BATCH_SIZES))
    failures: list[str] = []
    names = [o.name for o in session.get_outputs()]
    if names != list(OUTPUT_NAMES):
        raise ParityError(f"{onnx_path}: outputs are {names}, expected {list(OUTPUT_NAMES)}")

    rng = np.random.default_rng(seed)
    cases = [("MNIST test set", test_images)] + [
        (f"random batch {b}", rng.integers(0, 256, (b, 28, 28), dtype=np.uint8))
        for b in PARITY_BATCH_SIZES
    ]
    worst = {name: (0.0, "") for name in OUTPUT_NAMES}
    for case, images in cases:
        expected, actual = run_torch(model, images), run_onnx(session, images)
        for name in OUTPUT_NAMES:
            if actual[name].shape != expected[name].shape:
                failures.append(f"{name} on {case}: shape {actual[name].shape}, "
                                f"expected {expected[name].shape}")
                continue
            diff = float(np.max(np.abs(actual[name] - expected[name])))
            if not np.isfinite(diff):
                diff = float("inf")
            if diff >= worst[name][0]:
                worst[name] = (diff, case)
        if case == "MNIST test set":
            t_pred, o_pred = expected["logits"].argmax(1), actual["logits"].argmax(1)
            agree = int((t_pred == o_pred).sum())
            report.argmax_agreement = agree / len(images)
            report.torch_accuracy = float((t_pred == test_labels).mean())
            report.onnx_accuracy = float((o_pred == test_labels).mean())
            if agree != len(images):
                failures.append(f"argmax agrees on {agree}/{len(images)} test images; "
                                "100% is required")

    report.max_abs_diff = {name: worst[name][0] for name in OUTPUT_NAMES}
    for name, (diff, case) in worst.items():
        if not diff <= atol:
            failures.append(f"{name}: max |Δ| = {diff:.3g} > atol {atol:g} (worst on {case})")
    if failures:
        summary = ", ".join(f"{n} max |Δ| {d:.3g}" for n, (d, _) in worst.items())
        raise ParityError(
            f"{onnx_path} does not compute the checkpoint's function on onnxruntime's {provider} "
            f"provider ({summary}; atol {atol:g}):\n"
            + "\n".join(f"  - {f}" for f in failures)
        )
    return report


def model_variant(session) -> str:
    """fp32 or int8, as the exporter stamped it into the file's metadata."""
    return session.get_modelmeta().custom_metadata_map.get("digitscan.variant", "fp32")


@dataclass
class Int8Report:
    torch_accuracy: float
    int8_accuracy: float
    argmax_agreement: float
    max_abs_diff_probs: float
    test_images: int

    def to_dict(self) -> dict:
        return asdict(self)


def validate_int8(model: nn.Module, onnx_path: str | Path, test_images: np.ndarray,
                  test_labels: np.ndarray) -> Int8Report:
    """An int8 file cannot match its checkpoint to 1e-4: hold it to the gate `export
    --quantize int8` applied (accuracy within 0.2 points, argmax agreement >= 99.5 %),
    against the checkpoint itself."""
    from digitscan.modelcard import int8_gate

    expected = run_torch(model, test_images)
    actual = run_onnx(cpu_session(onnx_path), test_images)
    t_pred, q_pred = expected["logits"].argmax(1), actual["logits"].argmax(1)
    report = Int8Report(torch_accuracy=float((t_pred == test_labels).mean()),
                        int8_accuracy=float((q_pred == test_labels).mean()),
                        argmax_agreement=float((t_pred == q_pred).mean()),
                        max_abs_diff_probs=float(np.max(np.abs(actual["probs"] - expected["probs"]))),
                        test_images=len(test_images))
    failures = int8_gate(report.torch_accuracy, report.int8_accuracy, report.argmax_agreement)
    if failures:
        raise ParityError(f"int8 model {onnx_path} does not stand in for the checkpoint: "
                          + "; ".join(failures) + ".")
    return report
