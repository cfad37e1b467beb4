"""Batched augmentation on uint8 tensors, so the CNN tolerates real scans once the
worker has normalised them: small shifts, rotations, scale, stroke thickness and blur.
Runs on whole batches on the training device; no per-sample PIL work."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 12.0
    scale_range: tuple[float, float] = (0.85, 1.12)
    max_shift_px: float = 2.5
    max_shear: float = 0.15
    p_thicken: float = 0.25
    p_thin: float = 0.15
    p_blur: float = 0.2


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def augment(pixels: torch.Tensor, cfg: AugmentConfig = AugmentConfig(),
            generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [N,1,28,28] -> augmented uint8 [N,1,28,28]."""
    n, device = pixels.shape[0], pixels.device
    x = pixels.to(torch.float32) / 255.0

    angle = _uniform(n, -1, 1, generator, device) * math.radians(cfg.max_rotation_deg)
    scale = _uniform(n, *cfg.scale_range, generator, device)
    shear = _uniform(n, -cfg.max_shear, cfg.max_shear, generator, device)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2/28.
    shift = _uniform(2 * n, -1, 1, generator, device).view(n, 2) * cfg.max_shift_px * 2 / 28
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin + shear, shift[:, 0]], dim=1),
        torch.stack([sin, cos, shift[:, 1]], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def some(p: float) -> torch.Tensor:
        return (torch.rand(n, 1, 1, 1, generator=generator, device=device) < p).to(x.dtype)

    # Partial dilation/erosion: a full 3x3 max-pool thickens strokes by 2 px, too much.
    strength = _uniform(n, 0.3, 0.8, generator, device).view(n, 1, 1, 1)
    thick = F.max_pool2d(x, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
    x = x + some(cfg.p_thicken) * strength * (thick - x)
    x = x + some(cfg.p_thin) * strength * (thin - x)

    kernel = torch.tensor([1.0, 2.0, 1.0], device=device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).view(1, 1, 3, 3)
    x = x + some(cfg.p_blur) * (F.conv2d(x, kernel, padding=1) - x)

    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)
