"""The models. Every ``forward`` takes uint8 pixels [N,1,28,28] in MNIST polarity
(bright ink on black, 0-255) and normalises inside, so the module is its own
preprocessing and the ONNX export carries the same contract."""

from __future__ import annotations

import torch
from torch import nn

from digitscan.contract import MNIST_MEAN, MNIST_STD
from digitscan.trainer.config import ARCH_NAMES, DEFAULT_MODEL_ARGS, check_arch

__all__ = ["ARCHS", "CNN", "DEFAULT_MODEL_ARGS", "MLP", "MNIST_MEAN", "MNIST_STD", "Normalize",
           "build_model", "check_arch", "count_parameters"]


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


ARCHS: dict[str, type[nn.Module]] = {"cnn": CNN, "mlp": MLP}
assert tuple(ARCHS) == ARCH_NAMES


def build_model(arch: str, **model_args) -> nn.Module:
    return ARCHS[check_arch(arch)](**model_args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
