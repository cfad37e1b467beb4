"""The model's public contract, torch-free: what every exported graph takes and returns.

Shared by the trainer (normalisation constants), the exporter and its validator (names,
opset), the card, and the worker, which asks for outputs by name and checks the card.
"""

from __future__ import annotations

# MNIST training-set statistics, as in the seed notebook's transforms.Normalize.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

INPUT_NAME = "pixels"
LOGITS, PROBS = "logits", "probs"
OUTPUT_NAMES = (LOGITS, PROBS)
LABELS = [str(d) for d in range(10)]
POLARITY = "MNIST: bright ink (255) on black (0)"
NORMALISATION = {"scale": 1 / 255, "mean": MNIST_MEAN, "std": MNIST_STD,
                 "where": "inside the graph: (pixels / 255 - mean) / std"}
INPUT_SPEC = {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 1, 28, 28]}
OUTPUT_SPECS = [{"name": name, "dtype": "float32", "shape": ["batch", 10]} for name in OUTPUT_NAMES]

DEFAULT_OPSET = 18
# torch's dynamo exporter writes opset 18 and newer; older requests are refused, not
# silently upgraded.
MIN_OPSET, MAX_OPSET = 18, 23
