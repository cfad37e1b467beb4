"""Operators' metrics: a real worker pool serves Prometheus metrics for all its processes."""

from __future__ import annotations

import glob
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from digitscan.modelcard import verify_model_file
from digitscan.worker.embedded import LocalWorkers, free_port
from digitscan.worker.settings import Settings
from tests.conftest import png

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """name -> {labels: value} for every sample the endpoint serves."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_a_worker_pool_serves_metrics_for_every_process(redis_url, shipped_model, mnist, tmp_path):
    from digitscan import Client

    port = free_port()
    settings = Settings(broker_url=redis_url, model=str(shipped_model), concurrency=2,
                        queue=f"m-{uuid.uuid4().hex[:6]}", metrics_port=port)
    folders = set(glob.glob(f"{tempfile.gettempdir()}/digitscan-metrics-*"))
    images = {f"{i:02d}.png": png(mnist.test_images[i]) for i in range(30)}
    images.update({"a.png": b"not an image", "b.png": b"\x89PNG\r\n\x1a\n broken"})
    with LocalWorkers(settings.to_env(), 2, tmp_path / "w.log") as pool:
        pool.wait_ready()
        job = Client(settings=settings).submit_bytes(images, chunk_size=4)
        assert job.wait(timeout=120)["complete"]
        rows = list(job.results())
        metrics = scrape(port)
        assert set(glob.glob(f"{tempfile.gettempdir()}/digitscan-metrics-*")) - folders
    # the pool's folder of samples goes with the worker
    assert set(glob.glob(f"{tempfile.gettempdir()}/digitscan-metrics-*")) == folders

    outcomes = {dict(k)["outcome"]: v for k, v in metrics["digitscan_images_total"].items()}
    expected: dict[str, int] = {}
    for row in rows:
        kind = row["error"].split(":")[0] if row["error"] else "review" if row["review"] else "digit"
        expected[kind] = expected.get(kind, 0) + 1
    assert outcomes == expected and sum(outcomes.values()) == 32
    assert outcomes.get("digit", 0) >= 25
    stages = {dict(k)["stage"]: v for k, v in metrics["digitscan_stage_seconds_count"].items()}
    assert stages["decode"] == 30 and stages["normalise"] == 30  # the two errors stop at decode
    assert stages["model"] == 8  # one batch per chunk of 4
    chunks = {dict(k)["state"]: v for k, v in metrics["digitscan_chunk_seconds_count"].items()}
    assert chunks == {"done": 8}
    assert sum(metrics["digitscan_stage_seconds_sum"].values()) > 0
    sha = verify_model_file(shipped_model)["sha256"]
    (model,) = metrics["digitscan_model_info"]
    assert dict(model) == {"sha256": sha, "provider": "CPUExecutionProvider"}


def test_a_taken_metrics_port_stops_the_worker_in_one_line(shipped_model):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "digitscan.cli", "worker", "--metrics-port",
                              str(port), "--broker", "redis://127.0.0.1:1/0", "-c", "1"],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert f"DIGITSCAN_METRICS_PORT {port}: cannot serve metrics (Address already in use)" in out.stderr
    assert "Traceback" not in out.stderr
