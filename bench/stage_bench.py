"""Where one core's time goes per image, stage by stage (µs per image, median of 5 passes):

    python -m bench.stage_bench [--data data] [--cells 500]
    python -m bench.stage_bench --from DIR   # files named KIND-N.png|jpg (gpu_sweep pack's
                                             # cells): a host with neither fonts nor MNIST

decode (as the worker does it: allowlist and caps from Pillow's reading of the header, then
the pixels by OpenCV or Pillow) and cleanup + normalisation on each population of
``digitscan.export.populations``; the shipped model, fp32 and int8, over a chunk
(256) as the worker runs it on the CPU (``CPU_BATCH`` at a time) and in one batch, on one
onnxruntime thread; the messages' own CPU work per image in a chunk of 256 MNIST PNGs and
of 256 plain-paper form cells (the client's publishing of the chunk, the worker's reading of
it), without Redis; and the worker's encoding of its result lines.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from digitscan.devices import int8_native, int8_pays
from digitscan.errors import ImageError
from digitscan.export.populations import population
from digitscan.trainer.data import load_mnist
from digitscan.worker.imaging import COMPILED, decode_array, normalize
from digitscan.worker.messages import CONTENT_TYPE, Chunk, Item, pack, unpack
from digitscan.worker.model import CPU_BATCH
from digitscan.worker.results import result_line
from digitscan.worker.settings import default_model

BATCH = 256


def per_item(fn, items: list, passes: int = 5) -> float:
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / len(items) * 1e6


def _normalize(image) -> np.ndarray | None:
    try:
        return normalize(image)
    except ImageError:
        return None  # a cell the cleanup leaves blank costs what it cost


def model_us(path: str, digits: np.ndarray, batch: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name, x = session.get_inputs()[0].name, digits.reshape(-1, 1, 28, 28)

    def chunk(_) -> None:
        for i in range(0, len(x), batch):
            session.run(None, {name: x[i : i + batch]})

    return per_item(chunk, [None] * 3) / len(digits)


def from_folder(folder: Path) -> None:
    """Decode and cleanup per kind (the file name up to its first ``-``), then the models on
    the cleaned cells: what the populations give, from files."""
    kinds: dict[str, list[bytes]] = {}
    for path in sorted(folder.iterdir()):
        kinds.setdefault(path.name.split("-")[0], []).append(path.read_bytes())
    print(f"{'kind':<10} {'decode':>8} {'cleanup+normalise':>18}  (µs per image, one core; "
          f"compiled cleanup: {COMPILED})")
    digits = []
    for name, cells in kinds.items():
        images = [decode_array(c) for c in cells]
        print(f"{name:<10} {per_item(decode_array, cells):>8.0f} {per_item(_normalize, images):>18.0f}"
              f"  ({len(cells)} files)", flush=True)
        digits += [d for d in map(_normalize, images[:BATCH]) if d is not None]
    _models(np.stack(digits[:BATCH]))


def _models(digits: np.ndarray) -> None:
    for variant in ("digits.onnx", "digits.int8.onnx"):
        path = f"models/{variant}"
        print(f"model {variant}: {model_us(path, digits, CPU_BATCH):.0f} µs per image in batches "
              f"of {CPU_BATCH} as the worker runs a chunk ({model_us(path, digits, BATCH):.0f} "
              f"in one batch of {BATCH}), one thread", flush=True)
    def said(answer: bool | None) -> str:
        return "unknown" if answer is None else "yes" if answer else "no"

    print(f"native int8 on this CPU (AVX-512 VNNI, ARM dot product): {said(int8_native())}; "
          f"int8 measured faster on such a CPU (those, or AVX2): {said(int8_pays())}; "
          f"scan's default model here: {Path(default_model('cpu')).name}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--from", dest="folder", type=Path, default=None,
                        help="time these files (KIND-N.png|jpg) instead of rendering populations")
    args = parser.parse_args()
    if args.folder:
        return from_folder(args.folder)
    mnist = load_mnist(args.data, fetch=False)
    print(f"{'population':<10} {'decode':>8} {'cleanup+normalise':>18}  (µs per image, one core)")
    for name in ("mnist", "form", "boxed", "printed", "negative"):
        cells, _ = population(name, mnist, args.cells, seed=11)
        images = [decode_array(c) for c in cells]
        print(f"{name:<10} {per_item(decode_array, cells):>8.0f} {per_item(_normalize, images):>18.0f}",
              flush=True)
    _models(mnist.test_images[:BATCH])
    for name in ("mnist", "form"):
        files, _ = population(name, mnist, BATCH, seed=11)
        chunk = Chunk("0" * 32, 0, tuple(Item(i, f"{i}.png", data=d) for i, d in enumerate(files)))
        envelope = _publish(chunk)
        encode = per_item(_publish, [chunk] * 20) / BATCH
        decode_ = per_item(_receive, [envelope] * 20) / BATCH
        print(f"messages, {name}: publish {encode:.1f}, receive {decode_:.1f} µs per image (chunk "
              f"of {BATCH}, {len(envelope) / BATCH:.0f} bytes per image in Redis, files "
              f"{sum(map(len, files)) / BATCH:.0f})", flush=True)
    results = per_item(lambda _: [json.dumps(result_line(chunk.job, i, f"{i}.png", "m", digit=3,
                                                         confidence=0.99)) for i in range(BATCH)],
                       [None] * 20) / BATCH
    print(f"result lines: {results:.1f} µs per image")


def _publish(chunk: Chunk) -> str:
    """The client's own work on a chunk, as ``Submission.pump`` does it: the pending copy,
    Celery's body (protocol 2: args, kwargs, embed) in the chunk's serializer, and kombu's
    Redis envelope (JSON, the binary body in base64). Without Redis and Celery's headers."""
    message = chunk.to_message()
    pack(message)
    body = pack([[message], {}, {}])
    return json.dumps({"body": base64.b64encode(body).decode(), "content-type": CONTENT_TYPE})


def _receive(envelope: str) -> Chunk:
    """The worker's: the envelope, the body, the chunk checked."""
    args, _, _ = unpack(base64.b64decode(json.loads(envelope)["body"]))
    return Chunk.from_message(args[0])


if __name__ == "__main__":
    main()
