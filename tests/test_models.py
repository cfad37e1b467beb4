import pytest
import torch

from digitscan.errors import ConfigError
from digitscan.trainer.models import (
    DEFAULT_MODEL_ARGS,
    MNIST_MEAN,
    MNIST_STD,
    Calibrated,
    Normalize,
    build_model,
    multiply_adds,
)


@pytest.mark.parametrize(("arch", "classes"), [("cellnet", 11), ("cnn", 10), ("mlp", 10)])
def test_forward_takes_uint8_pixels(arch, classes):
    model = build_model(arch, **DEFAULT_MODEL_ARGS[arch]).eval()
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert model(x).shape == (3, classes)


def test_the_shipped_architecture_is_within_its_multiply_add_budget():
    """<= 4 M multiply-adds per image (the VGG-style CNN: 18.7 M), counted layer by layer."""
    assert multiply_adds(build_model("cnn", **DEFAULT_MODEL_ARGS["cnn"])) == 18_691_840
    assert multiply_adds(build_model("cellnet", **DEFAULT_MODEL_ARGS["cellnet"])) <= 4_000_000


def test_calibrated_divides_logits_by_the_temperature():
    model = build_model("mlp", **DEFAULT_MODEL_ARGS["mlp"]).eval()
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.allclose(Calibrated(model, 2.0)(x), model(x) / 2)


def test_normalisation_is_inside_the_model():
    x = torch.tensor([0, 255], dtype=torch.uint8)
    out = Normalize()(x)
    assert torch.allclose(out, torch.tensor([-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD]))


def test_mlp_is_the_seed_architecture():
    model = build_model("mlp", **DEFAULT_MODEL_ARGS["mlp"])
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(128, 784), (128,), (128, 128), (128,), (10, 128), (10,)]


def test_unknown_arch_names_the_valid_ones():
    with pytest.raises(ConfigError, match="Invalid arch 'resnet'. Only cellnet, cnn, mlp are supported"):
        build_model("resnet")


def test_multiply_adds_are_counted_on_the_models_own_device():
    # Training on CUDA counted them with a CPU probe and failed after the first epoch.
    model = build_model("cellnet").to("meta")
    assert multiply_adds(model) == multiply_adds(build_model("cellnet"))
