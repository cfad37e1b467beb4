"""digitscan: read handwritten digits at scale.

One import namespace. The stages live in folders of their own at the top of the
repository and install as subpackages:

    digitscan.trainer   (trainer/)  PyTorch training on MNIST
    digitscan.export    (export/)   ONNX export, parity proof, model card, int8
    digitscan.worker    (worker/)   Celery + onnxruntime, never torch

This package's own modules are what they share: the CLI, the exceptions, the model
contract and card reader, file and device helpers.
"""

__version__ = "0.1.0"
