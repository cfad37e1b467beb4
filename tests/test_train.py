"""Integration: real training on real MNIST."""

import json
import re
import shutil
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from digitscan.cli import main as cli
from digitscan.errors import CheckpointError, ConfigError
from digitscan.trainer import load_model
from digitscan.trainer.checkpoint import read_checkpoint
from digitscan.trainer.config import TrainConfig
from digitscan.trainer.train import evaluate_checkpoint, main

pytestmark = pytest.mark.integration


def test_one_epoch_mlp_reaches_a_real_accuracy_floor(mlp_run):
    metrics = json.loads((mlp_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.94  # one epoch of the seed recipe gets ~0.96
    assert len(metrics["per_class_accuracy"]) == 10
    assert metrics["data_source"] and metrics["wall_seconds"] > 0
    assert [e["epoch"] for e in metrics["epochs"]] == [1]
    for name in ("predictions.png", "training.png", "confusion.png", "errors.png"):
        with Image.open(mlp_run / name) as im:
            assert im.size[0] > 300


def test_checkpoint_is_one_dict_loadable_with_weights_only(mlp_run):
    state = torch.load(mlp_run / "checkpoint.pt", weights_only=True)
    assert {"model", "arch", "model_args", "optimizer", "epoch", "config", "metrics"} <= set(state)
    assert state["arch"] == "mlp" and state["epoch"] == 0
    model = load_model(mlp_run / "checkpoint.pt")
    assert not model.training
    assert model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 10)


def train_cli(*args):
    return CliRunner().invoke(cli, ["-q", "train", "--no-progress", *args])


def test_resume_refuses_what_it_would_silently_ignore(mlp_run, mnist_root, tmp_path):
    ckpt = str(mlp_run / "checkpoint.pt")
    where = ["--data", str(mnist_root), "--out", str(tmp_path / "out")]
    cases = [
        ([], "has finished all 1 epochs of its recipe: nothing to resume"),  # trained nothing, exit 0
        (["--epochs", "2"], "--epochs 2 differs from"),  # one-cycle: cannot be lengthened
        (["--arch", "cnn"], "--arch cnn differs from"),  # trained the MLP under a CNN's name
        (["--lr", "0.5"], "--lr 0.5 differs from"),
        (["--no-augment", "--epochs", "1"], "has finished all 1 epochs"),  # same as saved: fine
    ]
    for flags, message in cases:
        result = train_cli("--resume", ckpt, *flags, *where)
        assert result.exit_code == 1, (flags, result.output)
        assert message in result.output, (flags, result.output)
        assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_resume_continues_from_the_next_epoch(mlp_run, mnist_root, tmp_path):
    config = TrainConfig.for_arch("mlp", epochs=1, data=str(mnist_root), out=str(tmp_path))
    state = read_checkpoint(mlp_run / "checkpoint.pt")
    # A checkpoint whose one-cycle schedule was edited to more epochs is a clear error ...
    state["config"]["epochs"] = 2
    torch.save(state, tmp_path / "two.pt")
    with pytest.raises(ConfigError, match="laid out for 1; a one-cycle run cannot be lengthened"):
        main(replace(config, epochs=2, resume=str(tmp_path / "two.pt")), progress=False)
    # ... while a constant rate can be extended, from the command line too.
    state["config"]["epochs"], state["config"]["schedule"] = 1, "constant"
    torch.save(state, tmp_path / "one.pt")
    result = train_cli("--resume", str(tmp_path / "one.pt"), "--epochs", "2", "--data",
                       str(mnist_root), "--out", str(tmp_path / "more"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "more" / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert read_checkpoint(tmp_path / "more" / "checkpoint.pt")["epoch"] == 1
    assert metrics["test_accuracy"] >= 0.95


def test_cli_schedule_choice_reaches_the_checkpoint(mnist_root, tmp_path):
    result = CliRunner().invoke(cli, ["-q", "train", "--arch", "mlp", "--epochs", "1", "--schedule",
                                      "constant", "--data", str(mnist_root), "--out", str(tmp_path),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["config"]["schedule"] == "constant" and state["lr_scheduler"] is None
    assert state["metrics"]["test_accuracy"] >= 0.94


def test_evaluate_writes_accuracy_and_plots(mlp_run, mnist_root, tmp_path):
    metrics = evaluate_checkpoint(mlp_run / "checkpoint.pt", mnist_root, tmp_path)
    saved = json.loads((mlp_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(saved["test_accuracy"], abs=1e-6)
    assert (tmp_path / "confusion.png").exists() and (tmp_path / "evaluation.json").exists()


def test_evaluate_leaves_the_training_runs_plots_alone(mlp_run, mnist_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mlp_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = CliRunner().invoke(cli, ["evaluate", str(run / "checkpoint.pt"), "--data", str(mnist_root)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert (run / "evaluate-checkpoint" / "confusion.png").exists()
    assert "plots in " + str(run / "evaluate-checkpoint") in result.output


def test_bare_state_dict_is_refused_with_a_clear_error(tmp_path):
    torch.save({"fc1.weight": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a digitscan checkpoint .*missing model"):
        load_model(tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, "--epochs must be >= 1"),
    ("lr", -1.0, "--lr must be > 0"),
    ("device", "tpu", "Invalid device 'tpu'"),
    ("schedule", "cosine", "Invalid schedule 'cosine'. Use onecycle or constant"),
])
def test_bad_config_values_name_the_value(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.for_arch("cnn", **{field: value})


@pytest.mark.slow
def test_seed_recipe_twenty_epochs(mnist_root, tmp_path):
    """The seed notebook's recipe end to end (the seed's MLP, 20 epochs, batch 64, Adam peaking
    at 1e-3, annealed): 98.24-98.44 % over seeds 0-4 here; the issue's target is 98.0 %."""
    config = TrainConfig.for_arch("mlp", data=str(mnist_root), out=str(tmp_path), seed=2)
    assert (config.epochs, config.batch_size, config.lr, config.augment) == (20, 64, 1e-3, False)
    assert config.schedule == "onecycle"
    metrics = main(config, progress=False)
    assert metrics["test_accuracy"] >= 0.980


def test_distillation_learns_from_the_teachers_soft_predictions(mlp_run, mnist_root, tmp_path):
    teacher = str(mlp_run / "checkpoint.pt")
    result = train_cli("--arch", "mlp", "--epochs", "1", "--teacher", teacher,
                       "--data", str(mnist_root), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["config"]["teacher"] == teacher
    assert state["metrics"]["test_accuracy"] >= 0.94


def test_distillation_loss_pulls_towards_the_teacher():
    from digitscan.trainer.engine import DISTILL_WEIGHT, distillation_loss

    labels = torch.tensor([3, 7])
    teacher = torch.tensor([[0.0] * 3 + [4.0] + [0.0] * 6, [0.0] * 7 + [3.0, 2.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(teacher, labels)
    # Matching the teacher leaves only the labels' share of the loss ...
    assert torch.isclose(distillation_loss(teacher, teacher, labels), (1 - DISTILL_WEIGHT) * ce)
    # ... and the gradient of a student that differs points towards the teacher's answer.
    student = torch.zeros(2, 10, requires_grad=True)
    distillation_loss(student, teacher, labels).backward()
    assert student.grad[0, 3] < 0 and student.grad[1, 8] < 0  # 8: the teacher's runner-up


def test_a_teacher_with_other_classes_is_refused(mlp_run):
    from digitscan.trainer.models import build_model
    from digitscan.trainer.train import check_teacher

    with pytest.raises(ConfigError, match="predicts 10 classes, the model 11"):
        check_teacher(load_model(mlp_run / "checkpoint.pt"), build_model("cellnet"), "t.pt")


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_training_on_cells_gives_any_arch_an_eleventh_class(arch):
    from digitscan.trainer.models import build_model

    config = TrainConfig.for_arch(arch, cells=True)
    model = build_model(arch, **config.model_args)
    assert model(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).shape == (1, 11)
    assert build_model(arch, **TrainConfig.for_arch(arch).model_args)(
        torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).shape == (1, 10)


def test_calibration_sets_the_not_a_digit_threshold_above_nearly_every_digit():
    """Held-out logits straight through (an identity model): 2,000 digits, of which 12 the
    model half takes for "not a digit", and 500 negatives. The threshold must leave at most
    1 in 1,000 calibrated digits above it, stay >= 0.5, and the review threshold the
    ``REVIEW_SHARE`` (0.5 %)."""
    from digitscan.trainer.train import REVIEW_SHARE, calibrate

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2500, 11, generator=gen)
    labels = torch.cat([torch.arange(2000) % 10, torch.full((500,), 10)])
    logits[torch.arange(2500), labels] += 6.0
    logits[:12, 10] += 6.5  # digits the model doubts
    cal = calibrate(torch.nn.Identity(), logits, labels)
    probs = torch.softmax(logits / cal["temperature"], 1)
    above = (probs[:2000, 10] > cal["not_digit_above"]).sum()
    assert 0.5 <= cal["not_digit_above"] <= 0.99 and above <= 2, (cal, above)
    assert (probs[:2000, 10] > 0.5).sum() > 2  # ...while more than that would have been refused
    confidence = probs[:2000, :10].max(1).values
    below = int((confidence < cal["review_below"]).sum())
    assert abs(below - REVIEW_SHARE * 2000) <= 2, (below, cal)


def test_training_mix_repeats_mnist_and_appends_each_cell_set():
    import numpy as np

    from digitscan.trainer.train import training_mix

    writers, labels = np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3])
    sets = [(np.ones((2, 28, 28), np.uint8), np.array([10, 4])),
            (np.full((1, 28, 28), 2, np.uint8), np.array([5]))]
    x, y = training_mix(writers, labels, sets, mnist_repeat=2)
    assert y.tolist() == [1, 2, 3, 1, 2, 3, 10, 4, 5] and y.dtype == np.int64
    assert x.shape == (9, 28, 28) and x[-1].max() == 2


def test_init_starts_from_the_checkpoints_weights(mlp_run, mnist_root, tmp_path):
    ckpt = str(mlp_run / "checkpoint.pt")
    where = ["--data", str(mnist_root), "--out", str(tmp_path / "tuned")]
    # At a rate too small to learn anything in one epoch, only the weights it starts from
    # can read digits (from scratch: ~10 %).
    result = train_cli("--arch", "mlp", "--epochs", "1", "--lr", "1e-7", "--init", ckpt, *where)
    assert result.exit_code == 0, result.output
    state = read_checkpoint(tmp_path / "tuned" / "checkpoint.pt")
    assert state["config"]["init"] == ckpt and state["epoch"] == 0
    assert state["metrics"]["test_accuracy"] >= 0.94
    # Another model's weights, or --init with --resume: one line, nothing trained.
    for flags, message in ((["--arch", "cnn"], "holds a mlp model .* not this run's cnn"),
                           (["--arch", "mlp", "--resume", ckpt], "--init .* differs from .*Drop --init")):
        result = train_cli(*flags, "--epochs", "1", "--init", ckpt, "--data", str(mnist_root),
                           "--out", str(tmp_path / "refused"))
        assert result.exit_code == 1, (flags, result.output)
        assert re.search(message, result.output), (flags, result.output)
        assert "Traceback" not in result.output
        assert not (tmp_path / "refused" / "checkpoint.pt").exists()
