"""Inputs where users keep them: a real S3-protocol server (moto's, on loopback, as s3fs's
own tests use) and a real HTTP server, read through fsspec by `scan`, the Python API and,
by reference, by real workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from digitscan.worker.embedded import LocalWorkers, free_port
from digitscan.worker.messages import unpack
from digitscan.worker.settings import Settings
from tests.conftest import png, serve

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_scan_reads_a_bucket_prefix_and_streams_jsonl_to_stdout(s3, tmp_path):
    """`scan s3://bucket/prefix/ --out -`: the objects below the prefix, minus clutter and
    what --exclude leaves out, one JSON line each on stdout; the summary on stderr."""
    url = f"s3://{s3['bucket']}/cells/"
    out = subprocess.run([sys.executable, "-m", "digitscan.cli", "scan", url,
                          f"s3://{s3['bucket']}/batch.zip", "--out", "-", "--labels", "folders",
                          "--exclude", "rejects/*", "--include", "*.png"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 50  # 40 cells + 10 zip members; no .DS_Store, notes.txt, rejects/x.png
    assert rows[0]["source"] == f"{url}0/003.png"  # sorted by key, like a folder
    assert rows[-1]["source"].startswith(f"s3://{s3['bucket']}/batch.zip:")
    assert not any(r["error"] for r in rows)
    assert "accuracy" in out.stderr and "on 50 labelled" in out.stderr
    accuracy = float(out.stderr.split("accuracy ")[1].split("%")[0])
    assert accuracy >= 96.0
    assert "skipped 1 hidden files" in out.stderr and "2 files left out by --include/--exclude" in out.stderr
    assert "results on stdout" in out.stderr


def test_by_reference_workers_read_the_objects_themselves(redis_url, shipped_model, s3, mnist,
                                                         tmp_path):
    """With by_reference the chunks carry URLs and sizes, never image bytes; the workers
    fetch the objects, with the same AWS variables. An object deleted after submission is
    that image's error line, and its neighbours are read."""
    import redis

    from digitscan import Client

    settings = Settings(broker_url=redis_url, model=str(shipped_model),
                        queue=f"s3-{uuid.uuid4().hex[:6]}", concurrency=2)
    client = Client(settings=settings)
    bucket = s3["bucket"]
    # No worker yet: every chunk of the job waits in Redis, where we can read it.
    job = client.submit([f"s3://{bucket}/cells/"], by_reference=True, chunk_size=8,
                        include=("*.png",), exclude=("rejects/*",))
    messages = [unpack(m) for m in
                redis.Redis.from_url(redis_url).hvals(f"digitscan:job:{job.id}:pending")]
    items = [item for message in messages for item in message["items"]]
    assert len(items) == 40
    assert all(item["path"].startswith(f"s3://{bucket}/cells/") and "data" not in item
               and item["size"] > 0 for item in items)
    gone = f"cells/{mnist.test_labels[0]}/000.png"
    s3["client"].delete_object(Bucket=bucket, Key=gone)

    with LocalWorkers(settings.to_env(), 2, tmp_path / "w.log") as workers:
        workers.wait_ready()
        assert job.wait(timeout=120)["complete"]
    rows = list(job.results())
    assert len(rows) == 40
    errors = {r["source"]: r["error"] for r in rows if r["error"]}
    assert errors == {f"s3://{bucket}/{gone}": f"unreadable file: no such object: s3://{bucket}/{gone}"}
    labels = [int(r["source"].split("/cells/")[1].split("/")[0]) for r in rows]
    assert sum(r["digit"] == label for r, label in zip(rows, labels)) >= 37


def test_http_folder_listing_and_unreachable_storage_are_one_line(tmp_path, mnist):
    """An http:// folder (a web server's index page) is read like a local one; an S3
    endpoint that does not answer, or a scheme nobody knows, is one line and exit 1."""
    for i in range(12):
        folder = tmp_path / "site" / "cells" / str(mnist.test_labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.png").write_bytes(png(mnist.test_images[i]))
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    server = serve([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                   site + "/", cwd=tmp_path / "site")
    try:
        out = subprocess.run([sys.executable, "-m", "digitscan.cli", "scan", f"{site}/cells/",
                              "--out", str(tmp_path / "r.jsonl"), "--labels", "folders"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and rows[0]["source"].startswith(f"{site}/cells/")
    assert "on 12 labelled" in out.stdout

    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    for url, message in [
        ("s3://nobucket/cells/", "cannot read s3://nobucket/cells/ (EndpointConnectionError"),
        ("foo://bucket/x.png", "foo://bucket/x.png: Protocol not known: foo"),
    ]:
        out = subprocess.run([sys.executable, "-m", "digitscan.cli", "scan", url, "--out",
                              str(tmp_path / "x.jsonl")], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, env={**os.environ, **env})
        assert out.returncode == 1 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
