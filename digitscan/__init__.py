"""digitscan: read handwritten digits at scale.

Stages live in their own top-level packages: ``trainer`` (PyTorch), ``export``
(ONNX + parity) and ``worker`` (Celery + onnxruntime, no torch). This package
holds what they share: the CLI, the exceptions and small helpers.
"""

__version__ = "0.1.0"
