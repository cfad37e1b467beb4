"""The worker's classifier on each onnxruntime execution provider this machine offers.

Classifies the MNIST test set with ``worker.model.Classifier`` (the worker's own session
set-up) per provider: accuracy, images/s at a few batch sizes (median of 5 passes), and agreement
with the CPU provider. On a machine without onnxruntime-gpu it measures CPU alone and shows
what ``--provider cuda`` answers there.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort

from bench.timing import rate
from digitscan.errors import ProviderError
from digitscan.trainer.data import load_mnist
from digitscan.worker.model import Classifier, cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/digits.onnx")
    parser.add_argument("--data", default="data", help="MNIST root (default: data)")
    args = parser.parse_args()
    mnist = load_mnist(args.data, fetch=False)
    images, labels = mnist.test_images, mnist.test_labels
    print(f"onnxruntime {ort.__version__}, providers offered: {ort.get_available_providers()}")
    reference = None
    for provider in ("cpu", "cuda"):
        try:
            clf = Classifier(args.model, provider=provider, threads=cores())
        except ProviderError as exc:
            print(f"--provider {provider}: {exc}")
            continue
        clf.warm_up()
        preds = np.concatenate([clf.predict(images[s : s + 1000]) for s in range(0, len(images), 1000)])
        agree = "" if reference is None else (
            f", argmax agreement with cpu {100 * float((preds.argmax(1) == reference.argmax(1)).mean()):.2f}%"
            f", max |d probs| {float(np.abs(preds - reference).max()):.1e}")
        reference = preds if reference is None else reference
        rates = ", ".join(f"batch {b}: {rate(lambda b=b, c=clf: c.predict(images[:b]), b):,.0f}/s"
                          for b in (1, 256, 1024))
        print(f"--provider {provider} {clf.providers}: accuracy "
              f"{100 * float((preds.argmax(1) == labels).mean()):.2f}%{agree}; {rates}")


if __name__ == "__main__":
    main()
