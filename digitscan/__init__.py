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


def __getattr__(name: str):
    # `from digitscan import Client` without importing Redis or Celery for every other use
    # of the package (the trainer, the CLI's --help).
    if name == "Client":
        from digitscan.worker.api import Client

        return Client
    raise AttributeError(f"module 'digitscan' has no attribute {name!r}")
