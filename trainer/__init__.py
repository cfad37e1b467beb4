"""Trains the PyTorch models on real MNIST and writes a checkpoint, metrics and plots.

``trainer.data`` needs numpy only; everything else needs torch, imported on first use
so that ``import trainer.data`` stays cheap.
"""

from __future__ import annotations


def load_model(path):
    """The eval-mode module stored in a checkpoint (see ``trainer.checkpoint``)."""
    from digitscan.trainer.checkpoint import load_model as _load

    return _load(path)
