"""Averaging the weights of several fine-tunes of one model (a "model soup", Wortsman et al.
2022): runs that start from the same weights stay in one basin, so their average is a model
of the same size and cost that is usually more accurate than each of them.

``main(config)`` averages, calibrates the average anew on the recipe's held-out set (the
runs' temperatures and thresholds do not carry over to it), evaluates it on MNIST test, and
writes checkpoint.pt, metrics.json and the plots as a training run does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from digitscan.errors import ConfigError
from digitscan.files import writable_folder
from digitscan.hashing import sha256_file
from digitscan.trainer.checkpoint import read_checkpoint, save_checkpoint
from digitscan.trainer.config import TrainConfig
from digitscan.trainer.data import load_mnist
from digitscan.trainer.engine import evaluate
from digitscan.trainer.models import build_model, count_parameters, multiply_adds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AverageConfig:
    checkpoints: tuple[str, ...]
    data: str = "data"
    out: str = "runs/average"


def average_weights(states: list[dict], paths: list[str]) -> dict:
    """The element-wise mean of the checkpoints' float tensors (BatchNorm's running statistics
    included); integer counters are taken from the first. All must be one model."""
    if len(states) < 2:
        raise ConfigError(f"averaging needs at least two checkpoints, got {len(states)}: give "
                          "the fine-tunes to average.")
    first = states[0]
    for state, path in zip(states[1:], paths[1:]):
        if state["arch"] != first["arch"] or state["model_args"] != first["model_args"]:
            raise ConfigError(f"{path} holds a {state['arch']} model with {state['model_args']}, "
                              f"{paths[0]} a {first['arch']} with {first['model_args']}: only "
                              "checkpoints of one model can be averaged.")
    return {name: (torch.stack([s["model"][name] for s in states]).mean(0)
                   if tensor.is_floating_point() else tensor.clone())
            for name, tensor in first["model"].items()}


def main(config: AverageConfig) -> dict:
    """Average, calibrate, evaluate and save; return the metrics written to metrics.json."""
    from digitscan.trainer.train import as_tensors, calibrate, calibration_set, write_outputs

    paths = [str(p) for p in config.checkpoints]
    states = [read_checkpoint(p) for p in paths]
    weights = average_weights(states, paths)
    first = states[0]
    # The first run's recipe says which held-out set to calibrate on; every run of a cells
    # recipe holds out the same MNIST writers, and its calibration cells are never trained on.
    recipe = TrainConfig(**{**first["config"], "data": config.data})
    out = writable_folder(Path(config.out), "--out")
    model = build_model(first["arch"], **first["model_args"])
    model.load_state_dict(weights)
    model.eval()
    mnist = load_mnist(config.data)
    cpu = torch.device("cpu")
    metrics = {"arch": first["arch"], "parameters": count_parameters(model),
               "multiply_adds": multiply_adds(model),
               "average_of": [{"checkpoint": p, "sha256": sha256_file(p), "config": s["config"],
                               "test_accuracy": s["metrics"].get("test_accuracy"),
                               "epochs": s["metrics"].get("epochs", [])}
                              for p, s in zip(paths, states)]}
    if recipe.cells:
        images, labels = calibration_set(recipe, mnist)
        metrics["calibration"] = calibrate(model, *as_tensors(images, labels, cpu))
        log.info("calibrated: temperature %.3f, review below %.3f",
                 metrics["calibration"]["temperature"], metrics["calibration"]["review_below"])
    test_x, test_y = as_tensors(mnist.test_images, mnist.test_labels, cpu)
    result = evaluate(model, test_x, test_y)  # as training does: argmax is the temperature's
    metrics.update(test_accuracy=result.accuracy, test_loss=result.loss,
                   per_class_accuracy=result.per_class_accuracy(test_y), epochs=[],
                   wall_seconds=0.0, data_source=mnist.source, device="cpu")
    # No optimizer or schedule: an average is not one run and cannot be resumed
    # (``check_resumable`` says so); fine-tune it further with --init.
    save_checkpoint(out / "checkpoint.pt", model=model, optimizer=None, lr_scheduler=None,
                    epoch=-1, config=first["config"], metrics=metrics, arch=first["arch"],
                    model_args=first["model_args"])
    write_outputs(out, mnist, result, metrics, None)
    return metrics
