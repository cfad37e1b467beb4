"""Pictures people would rather look at than read. Headless (Agg), one function per figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def predictions_grid(images: np.ndarray, preds: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """The seed notebook's 2x5 grid of the first ten test images, "Pred / True"."""
    fig, axes = plt.subplots(2, 5, figsize=(10, 5))
    for i, ax in enumerate(axes.flat):
        ax.imshow(images[i], cmap="gray")
        ax.axis("off")
        ax.set_title(f"Pred: {preds[i]}\nTrue: {labels[i]}",
                     color="black" if preds[i] == labels[i] else "red")
    return _save(fig, path)


def training_curves(epochs: list[dict], path: Path) -> Path:
    xs = [e["epoch"] for e in epochs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(xs, [e["train_loss"] for e in epochs], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    b.plot(xs, [100 * e["test_accuracy"] for e in epochs], marker="o", color="tab:green")
    b.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion_matrix(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows: true digit; columns: predicted digit, and an 11th for "not a digit" if any."""
    cols = max(10, int(preds.max()) + 1 if len(preds) else 10)
    m = np.zeros((10, cols), dtype=np.int64)
    np.add.at(m, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return m


def confusion(preds: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    m = confusion_matrix(preds, labels)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    # Log colour scale: the diagonal would otherwise hide every mistake.
    im = ax.imshow(np.log1p(m), cmap="Blues")
    for t in range(m.shape[0]):
        for p in range(m.shape[1]):
            if m[t, p]:
                ax.text(p, t, str(m[t, p]), ha="center", va="center", fontsize=7,
                        color="white" if t == p else "black")
    ax.set(xticks=range(m.shape[1]), yticks=range(10), xlabel="predicted (10: not a digit)",
           ylabel="true",
           title=f"Confusion matrix ({int(np.trace(m))}/{int(m.sum())} correct)")
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    return _save(fig, path)


def errors_grid(images: np.ndarray, preds: np.ndarray, labels: np.ndarray, path: Path,
                limit: int = 24) -> Path:
    wrong = np.flatnonzero(preds != labels)[:limit]
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], cmap="gray")
        ax.set_title(f"#{i}: {preds[i]} ({labels[i]})", fontsize=8, color="red")
    fig.suptitle(f"Misread test images: predicted (true), first {len(wrong)} of "
                 f"{int((preds != labels).sum())}")
    return _save(fig, path)


def write_all(out: Path, images: np.ndarray, preds: np.ndarray, labels: np.ndarray,
              epochs: list[dict] | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        predictions_grid(images, preds, labels, out / "predictions.png"),
        confusion(preds, labels, out / "confusion.png"),
        errors_grid(images, preds, labels, out / "errors.png"),
    ]
    if epochs:
        paths.append(training_curves(epochs, out / "training.png"))
    return paths
