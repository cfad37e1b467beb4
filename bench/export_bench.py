"""Inference speed on this CPU: onnxruntime (fp32, int8) vs torch eager, at batch 1, 64, 1024.

Images/s are medians over several timed passes, all in one run; file sizes from disk.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.timing import rate
from digitscan.contract import INPUT_NAME
from digitscan.export.runtime import cpu_session
from digitscan.trainer import load_model
from digitscan.trainer.data import load_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data")
    parser.add_argument("--models", default="models")
    args = parser.parse_args()
    models = Path(args.models)
    images = load_mnist(args.data, fetch=False).test_images
    torch_model = load_model(models / "digits.pt")
    sessions = {"onnxruntime fp32": cpu_session(models / "digits.onnx")}
    if (models / "digits.int8.onnx").exists():
        sessions["onnxruntime int8"] = cpu_session(models / "digits.int8.onnx")
    print(f"inference images/s on CPU ({torch.get_num_threads()} threads), median of 5 passes")
    print(f"{'batch':>6} {'torch eager':>12} " + " ".join(f"{k:>17}" for k in sessions))
    for batch in (1, 64, 1024):
        x = images[:batch].reshape(batch, 1, 28, 28).copy()
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            t = rate(lambda tx=tx: torch_model(tx), batch)
        row = [rate(lambda s=s, x=x: s.run(None, {INPUT_NAME: x}), batch) for s in sessions.values()]
        print(f"{batch:>6} {t:>12,.0f} " + " ".join(f"{r:>17,.0f}" for r in row))
    for name in ("digits.pt", "digits.onnx", "digits.int8.onnx"):
        if (models / name).exists():
            print(f"{name}: {(models / name).stat().st_size / 1e6:.2f} MB")
    card = models / "digits.int8.json"
    if card.exists():
        parity = json.loads(card.read_text())["parity"]
        print(f"int8 vs fp32: accuracy {100 * parity['int8_accuracy']:.2f}% vs "
              f"{100 * parity['fp32_accuracy']:.2f}%, argmax agreement "
              f"{100 * parity['argmax_agreement']:.2f}%")


if __name__ == "__main__":
    main()
