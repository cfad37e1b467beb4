"""One checkpoint dict that rebuilds and resumes everything (vision's references, nanoGPT).

Keys: model, arch, model_args, optimizer, lr_scheduler, epoch, config, metrics, version.
Only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import digitscan
from digitscan.errors import CheckpointError
from digitscan.files import replacing
from digitscan.trainer.models import Calibrated, build_model

REQUIRED_KEYS = ("model", "arch", "model_args", "epoch", "config", "metrics")


def save_checkpoint(path: str | Path, *, model: nn.Module, optimizer, lr_scheduler, epoch: int,
                    config: dict, metrics: dict, arch: str, model_args: dict) -> None:
    path = Path(path)
    state = {
        "model": {k: v.contiguous() for k, v in model.state_dict().items()},
        "arch": arch,
        "model_args": model_args,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "epoch": epoch,
        "config": config,
        "metrics": metrics,
        "version": digitscan.__version__,
    }
    with replacing(path) as part:  # a crash mid-save never leaves a half-written checkpoint
        torch.save(state, part)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `digitscan train`.")
    if path.suffix == ".onnx":
        raise CheckpointError(f"{path} is an ONNX model, not a PyTorch checkpoint: give the .pt "
                              "that `digitscan train` wrote (`digitscan validate CKPT MODEL.onnx` "
                              "checks an exported model).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason}); give "
                              "the .pt that `digitscan train` wrote.") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a digitscan checkpoint (missing {', '.join(missing)}); "
            "a bare state_dict cannot be rebuilt. Train with `digitscan train`."
        )
    return state


def load_model(path: str | Path) -> nn.Module:
    """The eval-mode module stored in a checkpoint, on the CPU."""
    return model_from_state(read_checkpoint(path), path)


def model_from_state(state: dict, path: str | Path) -> nn.Module:
    """The eval-mode module from a checkpoint dict already read by ``read_checkpoint``: the
    function that is exported and deployed, with its calibration temperature if it has one."""
    model = build_model(state["arch"], **state["model_args"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit arch {state['arch']!r}: {exc}") from None
    temperature = (state["metrics"].get("calibration") or {}).get("temperature")
    if temperature is not None:
        model = Calibrated(model, float(temperature))
    return model.eval()
