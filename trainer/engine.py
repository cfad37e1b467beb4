"""One epoch of training and one evaluation, on tensors held in memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from digitscan.trainer.augment import AugmentConfig, augment

# Distillation (Hinton et al. 2015): the student matches the teacher's probabilities softened
# at this temperature, weighted against the labels' cross-entropy. The soft targets carry
# what the labels do not (this 7 looks a little like a 1), which a small model learns from.
DISTILL_TEMPERATURE = 4.0
DISTILL_WEIGHT = 0.7


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    t = DISTILL_TEMPERATURE
    soft = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t
    return DISTILL_WEIGHT * soft + (1 - DISTILL_WEIGHT) * F.cross_entropy(logits, labels)


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # a fraction
    loss: float
    predictions: torch.Tensor  # int64 [N], on the CPU

    def per_class_accuracy(self, labels: torch.Tensor) -> list[float]:
        labels = labels.cpu().long()
        return [
            float((self.predictions[labels == c] == c).float().mean()) for c in range(10)
        ]


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                    images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    generator: torch.Generator, epoch: int,
                    augment_cfg: AugmentConfig | None = None, progress: bool = True,
                    teacher: nn.Module | None = None) -> float:
    """Train over a fresh permutation of (images uint8 [N,1,28,28], labels); return mean loss.
    With a ``teacher`` (eval mode), learn from its soft predictions on the same augmented
    batch as well as from the labels."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    order = torch.randperm(len(images), generator=generator).to(images.device)
    # One gather per epoch, then contiguous slices: cheaper than a gather per batch.
    images, labels = images[order], labels[order]
    total, batches = 0.0, 0
    bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}", unit="batch",
               disable=not progress, leave=False)
    for start in bar:
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        if augment_cfg is not None:
            x = augment(x, augment_cfg)
        optimizer.zero_grad(set_to_none=True)
        if teacher is None:
            loss = criterion(model(x), y)
        else:
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = distillation_loss(model(x), teacher_logits, y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        batches += 1
        if batches % 50 == 0:
            bar.set_postfix(loss=f"{total / batches:.4f}")
    return total / max(batches, 1)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> EvalResult:
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    preds, loss = [], 0.0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        loss += criterion(logits, labels[start : start + batch_size]).item()
        preds.append(logits.argmax(1).cpu())
    predictions = torch.cat(preds)
    accuracy = float((predictions == labels.cpu()).float().mean())
    return EvalResult(accuracy=accuracy, loss=loss / len(images), predictions=predictions)
