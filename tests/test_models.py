import pytest
import torch

from digitscan.errors import ConfigError
from digitscan.trainer.models import DEFAULT_MODEL_ARGS, MNIST_MEAN, MNIST_STD, Normalize, build_model


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_forward_takes_uint8_pixels(arch):
    model = build_model(arch, **DEFAULT_MODEL_ARGS[arch]).eval()
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert model(x).shape == (3, 10)


def test_normalisation_is_inside_the_model():
    x = torch.tensor([0, 255], dtype=torch.uint8)
    out = Normalize()(x)
    assert torch.allclose(out, torch.tensor([-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD]))


def test_mlp_is_the_seed_architecture():
    model = build_model("mlp", **DEFAULT_MODEL_ARGS["mlp"])
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(128, 784), (128,), (128, 128), (128,), (10, 128), (10,)]


def test_unknown_arch_names_the_valid_ones():
    with pytest.raises(ConfigError, match="Invalid arch 'resnet'. Only cnn, mlp are supported"):
        build_model("resnet")
