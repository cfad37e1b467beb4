"""Accuracy on what users scan, through the worker's real path (decode, cell cleanup,
normalisation, onnxruntime): the full population sets of ``digitscan.export.populations``.

    python -m bench.population_bench [--model models/digits.onnx] [--data data]

Prints one row per population (accuracy, share flagged for a person, accuracy among the
cells not flagged), the calibration error, and the error-reject curve of each.
"""

from __future__ import annotations

import argparse
import json
import time

from digitscan.export.pipeline import CARD_POPULATIONS
from digitscan.export.populations import measure
from digitscan.trainer.data import load_mnist
from digitscan.worker.model import Classifier, cores

SIZES = CARD_POPULATIONS  # the card states the same figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/digits.onnx")
    parser.add_argument("--data", default="data")
    parser.add_argument("--size", type=int, default=None, help="cells per population")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    sizes = {k: args.size or v for k, v in SIZES.items()}
    clf = Classifier(args.model, "cpu", threads=cores())
    t0 = time.perf_counter()
    report = measure(clf.predict, load_mnist(args.data), sizes, clf.review_below,
                     not_digit_above=clf.not_digit_above)
    print(f"model {args.model} (sha256 {clf.sha256[:16]}), review below {clf.review_below:.3f}, "
          f"not a digit above {clf.not_digit_above:.3f}, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'population':<10} {'cells':>6} {'accuracy':>9} {'flagged':>8} {'acc. not flagged':>17}")
    for name in sizes:
        r = report[name]
        if name == "negative":
            print(f"{name:<10} {r['cells']:>6} {'-':>9} {100 * r['flagged']:>7.2f}% {'-':>17}")
        else:
            print(f"{name:<10} {r['cells']:>6} {100 * r['accuracy']:>8.2f}% {100 * r['flagged']:>7.2f}% "
                  f"{100 * r['accuracy_when_not_flagged']:>16.2f}%")
    print(f"digits flagged: {100 * report['digits_flagged']:.2f}%; expected calibration error "
          f"{report['expected_calibration_error']:.4f}")
    print("error-reject curve (sent to review -> error among accepted):")
    for name in sizes:
        if name == "negative":
            continue
        points = ", ".join(f"{p['review_below']:g}: {100 * p['sent_to_review']:.1f}% -> "
                           f"{100 * p['error_among_accepted']:.2f}%"
                           for p in report[name]["error_reject_curve"] if p["review_below"] >= 0.5)
        print(f"  {name}: {points}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
