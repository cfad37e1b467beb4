"""The Python API as the README shows it, against a real Redis and real workers."""

from __future__ import annotations

import io
import uuid
import zipfile

import pytest
from PIL import Image

from digitscan.worker.embedded import LocalWorkers
from digitscan.worker.settings import Settings

pytestmark = pytest.mark.integration


def png(image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(255 - image).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def pool(redis_url, shipped_model, tmp_path):
    queue = f"api-{uuid.uuid4().hex[:6]}"
    settings = Settings(broker_url=redis_url, model=str(shipped_model), queue=queue, concurrency=2)
    with LocalWorkers(settings.to_env(), 2, tmp_path / "w.log") as workers:
        workers.wait_ready()
        yield settings


def test_the_readme_snippet(pool, mnist, tmp_path, monkeypatch, s3):
    from digitscan import Client

    (tmp_path / "scans").mkdir()
    for i in range(20):
        (tmp_path / "scans" / f"{i:02d}.png").write_bytes(png(mnist.test_images[i]))
    with zipfile.ZipFile(tmp_path / "batch.zip", "w") as zf:
        for i in range(20, 30):
            zf.writestr(f"{i}.png", png(mnist.test_images[i]))

    monkeypatch.setenv("DIGITSCAN_BROKER_URL", pool.broker_url)
    monkeypatch.setenv("DIGITSCAN_QUEUE", pool.queue)
    client = Client()  # from DIGITSCAN_BROKER_URL
    job = client.submit([tmp_path / "scans", str(tmp_path / "batch.zip"),
                         f"s3://{s3['bucket']}/cells/0/"], chunk_size=8)  # 5 zeros of the bucket's 40
    job2 = client.submit_bytes({"cheque-17.png": png(mnist.test_images[30]),
                                "junk.bin": b"not an image"})
    assert job.wait(timeout=120)["complete"] and job2.wait(timeout=120)["complete"]
    rows = list(job.results())
    assert [set(r) for r in rows] == [{"job", "source", "digit", "confidence", "review", "error",
                                       "model"}] * 35
    assert sum(r["digit"] == mnist.test_labels[i] for i, r in enumerate(rows[:30])) >= 29
    assert rows[20]["source"].endswith("batch.zip:20.png")
    assert rows[30]["source"] == f"s3://{s3['bucket']}/cells/0/003.png"
    assert [r["digit"] for r in rows[30:]] == [0] * 5
    cheque, junk = job2.results()
    assert (cheque["source"], cheque["digit"]) == ("cheque-17.png", mnist.test_labels[30])
    assert junk["error"].startswith("unsupported format")
    assert job.status()["done"] == 35
    assert {j["job"] for j in client.jobs()} >= {job.id, job2.id}
    assert client.job(job.id).status()["total"] == 35

    job2.cancel()
    assert job2.status()["cancelled"] is not None
    job2.delete()
    with pytest.raises(Exception, match="unknown"):
        job2.status()


def test_wrong_argument_types_say_what_to_pass(pool):
    from digitscan import Client

    client = Client(pool.broker_url, settings=pool)
    with pytest.raises(TypeError, match=r"a list of paths, e.g. submit\(\['scans/'\]\)"):
        client.submit("scans/")  # a bare string once walked the whole filesystem
    with pytest.raises(TypeError, match="each input must be a path"):
        client.submit([b"x"])
    with pytest.raises(TypeError, match="mapping of name -> bytes"):
        client.submit_bytes([b"x"])
    with pytest.raises(TypeError, match="must be a str"):
        Client(6379)
