"""The models. Every ``forward`` takes uint8 pixels [N,1,28,28] in MNIST polarity
(bright ink on black, 0-255) and normalises inside, so the module is its own
preprocessing and the ONNX export carries the same contract."""

from __future__ import annotations

import torch
from torch import nn

from digitscan.contract import MNIST_MEAN, MNIST_STD
from digitscan.trainer.config import ARCH_NAMES, DEFAULT_MODEL_ARGS, check_arch

__all__ = ["ARCHS", "CNN", "CellNet", "DEFAULT_MODEL_ARGS", "MLP", "MNIST_MEAN", "MNIST_STD", "Normalize",
           "Calibrated", "build_model", "check_arch", "count_parameters", "multiply_adds"]


class Normalize(nn.Module):
    """uint8 (or float 0-255) pixels to the normalised float the layers were trained on."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.to(torch.float32) / 255.0 - MNIST_MEAN) / MNIST_STD


class MLP(nn.Module):
    """The seed notebook's network, unchanged: 784-128-128-10 with ReLU."""

    def __init__(self, input_size: int = 784, hidden_size: int = 128, output_size: int = 10):
        super().__init__()
        self.normalize = Normalize()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.fc3 = nn.Linear(hidden_size, output_size)
        self.relu = nn.ReLU()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalize(pixels).flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes a conv bias redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class CNN(nn.Module):
    """Two VGG-style stages (two 3x3 convs + max-pool each) and a small classifier head.

    Sized for 2 CPU cores: 18.7 M multiply-adds per image, >= 99.5 % on MNIST test
    with the trainer's augmentation.
    """

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 128,
                 dropout: float = 0.3, num_classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.normalize = Normalize()
        self.features = nn.Sequential(
            _conv_block(1, c1), _conv_block(c1, c1), nn.MaxPool2d(2),   # 28 -> 14
            _conv_block(c1, c2), _conv_block(c2, c2), nn.MaxPool2d(2),  # 14 -> 7
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(pixels)))


def _separable(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: a 3x3 conv's reach for ~1/9 of its multiply-adds."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class CellNet(nn.Module):
    """The shipped model: digits 0-9 and an eleventh class, "not a digit", for form cells.

    Sized for throughput: 3.8 M multiply-adds per image (the VGG-style CNN: 18.7 M, most of
    it one 32->32 3x3 convolution at full 28x28 resolution). One plain 3x3 conv at full
    resolution, then depthwise-separable blocks, downsampling early; the 7x7 map is
    squeezed to a few channels and kept whole (where a stroke is matters for digits) for a
    wide fully connected head, where parameters are cheap in multiply-adds.
    """

    def __init__(self, widths: tuple[int, int, int] = (24, 64, 128), squeeze: int = 48,
                 hidden: int = 320, num_classes: int = 11, dropout: float = 0.3):
        super().__init__()
        w1, w2, w3 = widths
        self.normalize = Normalize()
        self.features = nn.Sequential(
            _conv_block(1, w1),                                       # 28x28
            _separable(w1, 32), nn.MaxPool2d(2),                      # 28 -> 14
            _separable(32, w2), _separable(w2, w2), nn.MaxPool2d(2),  # 14 -> 7
            _separable(w2, w3),                                       # 7x7
            nn.Conv2d(w3, squeeze, 1, bias=False), nn.BatchNorm2d(squeeze), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(squeeze * 7 * 7, hidden),
            nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(pixels)))


class Calibrated(nn.Module):
    """A trained model with its temperature folded in: logits / T, so that the softmax of
    what it returns is a calibrated probability (temperature scaling, fitted on held-out
    data after training; argmax unchanged)."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.register_buffer("inverse_temperature", torch.tensor(1.0 / temperature))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels) * self.inverse_temperature


def multiply_adds(model: nn.Module) -> int:
    """Multiply-adds of one 28x28 image through the convolutions and linear layers."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() // output.shape[0] * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28, dtype=torch.uint8, device=next(model.parameters()).device))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total


ARCHS: dict[str, type[nn.Module]] = {"cellnet": CellNet, "cnn": CNN, "mlp": MLP}
assert tuple(ARCHS) == ARCH_NAMES


def build_model(arch: str, **model_args) -> nn.Module:
    return ARCHS[check_arch(arch)](**model_args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
