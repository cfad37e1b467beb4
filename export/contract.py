"""The graph's public contract, shared by the exporter, the validator and the card."""

from __future__ import annotations

from digitscan.trainer.models import MNIST_MEAN, MNIST_STD

INPUT_NAME = "pixels"
OUTPUT_NAMES = ("logits", "probs")
LABELS = [str(d) for d in range(10)]
POLARITY = "MNIST: bright ink (255) on black (0)"
NORMALISATION = {"scale": 1 / 255, "mean": MNIST_MEAN, "std": MNIST_STD,
                 "where": "inside the graph: (pixels / 255 - mean) / std"}
INPUT_SPEC = {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 1, 28, 28]}
OUTPUT_SPECS = [{"name": name, "dtype": "float32", "shape": ["batch", 10]} for name in OUTPUT_NAMES]
DEFAULT_OPSET = 18
