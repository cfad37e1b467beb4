"""Integration: averaging real checkpoints (trainer/average.py) and the CLI around it."""

import json

import pytest
import torch
from click.testing import CliRunner

from digitscan.cli import main as cli
from digitscan.trainer import load_model
from digitscan.trainer.checkpoint import read_checkpoint
from digitscan.trainer.config import TrainConfig
from digitscan.trainer.train import main as train_main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def second_mlp(mnist_root, tmp_path_factory):
    """Another real one-epoch MLP run of the same recipe, another seed."""
    out = tmp_path_factory.mktemp("mlp-seed1")
    train_main(TrainConfig.for_arch("mlp", epochs=1, seed=1, data=str(mnist_root), out=str(out)),
               progress=False)
    return out / "checkpoint.pt"


def run(*args):
    return CliRunner().invoke(cli, ["-q", *args])


def test_the_average_is_the_mean_of_the_weights_and_reads_digits(mlp_run, second_mlp,
                                                                 mnist_root, tmp_path):
    first = mlp_run / "checkpoint.pt"
    result = run("average", str(first), str(second_mlp), "--data", str(mnist_root),
                 "--out", str(tmp_path / "avg"))
    assert result.exit_code == 0, result.output
    assert "the average of 2 checkpoints" in result.output
    a, b = read_checkpoint(first), read_checkpoint(second_mlp)
    avg = read_checkpoint(tmp_path / "avg" / "checkpoint.pt")
    for name, tensor in avg["model"].items():
        assert torch.allclose(tensor, (a["model"][name] + b["model"][name]) / 2, atol=1e-7), name
    assert not torch.equal(a["model"]["fc1.weight"], b["model"]["fc1.weight"])  # two real runs
    metrics = json.loads((tmp_path / "avg" / "metrics.json").read_text())
    assert [m["checkpoint"] for m in metrics["average_of"]] == [str(first), str(second_mlp)]
    assert all(len(m["sha256"]) == 64 and m["epochs"] for m in metrics["average_of"])
    # Two one-epoch MLPs from different seeds do not share a basin as fine-tunes do, yet
    # their average still reads digits; the figure is measured, not taken from either run.
    assert metrics["test_accuracy"] >= 0.5 and metrics == avg["metrics"]
    assert load_model(tmp_path / "avg" / "checkpoint.pt")(
        torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).shape == (1, 10)
    assert (tmp_path / "avg" / "confusion.png").stat().st_size > 1000


def test_an_average_is_not_resumed_but_can_be_fine_tuned(mlp_run, second_mlp, mnist_root,
                                                         tmp_path):
    run("average", str(mlp_run / "checkpoint.pt"), str(second_mlp), "--data", str(mnist_root),
        "--out", str(tmp_path / "avg"))
    avg = str(tmp_path / "avg" / "checkpoint.pt")
    result = run("train", "--no-progress", "--resume", avg, "--data", str(mnist_root),
                 "--out", str(tmp_path / "resumed"))
    assert result.exit_code == 1 and "is an average of 2 runs' weights" in result.output
    assert f"--init {avg}" in result.output and "Traceback" not in result.output
    result = run("train", "--no-progress", "--arch", "mlp", "--epochs", "1", "--lr", "1e-7",
                 "--init", avg, "--data", str(mnist_root), "--out", str(tmp_path / "tuned"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("which, message", [
    ("one", "averaging needs at least two checkpoints, got 1"),
    ("cnn", "only checkpoints of one model can be averaged"),
])
def test_what_cannot_be_averaged_is_one_line(which, message, mlp_run, mnist_root, tmp_path):
    first = str(mlp_run / "checkpoint.pt")
    paths = [first]
    if which == "cnn":
        other = tmp_path / "cnn.pt"
        state = read_checkpoint(first)
        state.update(arch="cnn", model_args=dict(TrainConfig.for_arch("cnn").model_args))
        torch.save(state, other)
        paths.append(str(other))
    result = run("average", *paths, "--data", str(mnist_root), "--out", str(tmp_path / "avg"))
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "avg").exists()
