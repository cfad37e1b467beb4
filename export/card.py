"""The model card: everything a consumer needs to trust and use the ONNX file."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

import onnx
import onnxruntime
import torch

import digitscan
from digitscan.contract import INPUT_SPEC, NORMALISATION, POLARITY, labels_for, output_specs
from digitscan.files import replacing
from digitscan.hashing import sha256_file
from digitscan.modelcard import CARD_FORMAT, card_path_for


def metadata_props(*, arch: str, checkpoint_sha256: str, test_accuracy: float,
                   variant: str, classes: int = 10) -> dict[str, str]:
    """Facts that travel inside the ONNX file itself (``metadata_props``)."""
    return {
        "digitscan.labels": json.dumps(labels_for(classes)),
        "digitscan.polarity": POLARITY,
        "digitscan.normalisation": json.dumps(NORMALISATION),
        "digitscan.arch": arch,
        "digitscan.variant": variant,
        "digitscan.checkpoint_sha256": checkpoint_sha256,
        "digitscan.test_accuracy": f"{test_accuracy:.6f}",
    }


def build_card(model_path: str | Path, *, checkpoint: str | Path, checkpoint_sha256: str,
               arch: str, parameters: int, variant: str, test_accuracy: float,
               parity: dict, classes: int = 10, extra: dict | None = None) -> dict:
    model_path = Path(model_path)
    proto = onnx.load(str(model_path), load_external_data=False)
    return {
        "format": CARD_FORMAT,
        "file": model_path.name,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "variant": variant,
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": proto.ir_version,
        "producers": {
            "digitscan": digitscan.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime_validation": onnxruntime.__version__,
            "python": platform.python_version(),
        },
        "input": INPUT_SPEC,
        "outputs": output_specs(classes),
        "labels": labels_for(classes),
        "polarity": POLARITY,
        "normalisation": NORMALISATION,
        "arch": arch,
        "parameters": parameters,
        "test_accuracy": test_accuracy,
        "test_accuracy_measured_with": "onnxruntime CPUExecutionProvider, MNIST test set (10,000)",
        "parity": parity,
        "checkpoint": Path(checkpoint).name,
        "checkpoint_sha256": checkpoint_sha256,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def write_card(model_path: str | Path, card: dict) -> Path:
    path = card_path_for(model_path)
    with replacing(path) as part:
        part.write_text(json.dumps(card, indent=2) + "\n")
    return path
