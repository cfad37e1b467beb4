"""The job report: one self-contained HTML file, checked in a real headless browser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from digitscan.cli import main as cli
from tests.conftest import png

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's (make browser)


def scan(*args):
    return subprocess.run([sys.executable, "-m", "digitscan.cli", "scan", *args],
                          capture_output=True, text=True, timeout=600)


def open_in_browser(page: Path, screenshot: Path | None = None) -> dict:
    """Load ``page`` in headless Chromium; what it rendered, as the page's own JS sees it."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,2400",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(page.as_uri())
        state = driver.execute_script("""
            const imgs = [...document.images];
            return {title: document.title,
                    images: imgs.length,
                    rendered: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                    visible: imgs.filter(i => i.getBoundingClientRect().width > 0).length,
                    cells: document.querySelectorAll('.cell').length,
                    error_rows: document.querySelectorAll('table tr').length - 1,
                    bars: document.querySelectorAll('svg rect').length,
                    fetched: performance.getEntriesByType('resource').map(r => r.name)};""")
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
        return state
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, mnist, shipped_model):
    """A folder as users bring it: digits, boxed cells, cells with no digit, broken files,
    and a zip; scanned with --report."""
    from digitscan.trainer import cells

    tmp = tmp_path_factory.mktemp("report")
    folder = tmp / "cells"
    folder.mkdir()
    for i in range(30):
        (folder / f"mnist-{i:03d}.png").write_bytes(png(mnist.test_images[i]))
    for i, data in enumerate(cells.boxed_cells(mnist.test_images[30:40], seed=5)):
        (folder / f"boxed-{i:03d}.img").write_bytes(data)
    _, fonts = cells.split_fonts()
    negatives, _ = cells.negative_cells(fonts, mnist.test_images, 20, seed=6)
    for i, data in enumerate(negatives):
        (folder / f"none-{i:03d}.img").write_bytes(data)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut off")
    (folder / "notes.txt").write_bytes(b"not an image")
    with zipfile.ZipFile(folder / "batch.zip", "w") as zf:
        for i in range(40, 45):
            zf.writestr(f"cells/{i}.png", png(mnist.test_images[i]))
    out, page = tmp / "r.jsonl", tmp / "report.html"
    result = scan(str(folder), "--out", str(out), "--report", str(page), "--model",
                  str(shipped_model), "--review-below", "0.97")
    assert result.returncode == 0, result.stderr
    assert f"report in {page}" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return page, rows


def test_report_counts_every_result_and_refers_to_nothing_outside(scanned):
    page, rows = scanned
    text = page.read_text()
    assert len(rows) == 67
    for digit in range(10):
        n = sum(r["digit"] == digit and not r["error"] for r in rows)
        assert f"<title>{digit}: {n:,}</title>" in text
    attention = [r for r in rows if r["review"] or (r["error"] or "").startswith("not a digit")]
    assert text.count("<div class='cell ") == len(attention) > 0
    for r in rows:
        if r["error"]:
            assert f"<td class=src>{r['source']}</td>" in text  # every error by file name
    # self-contained: every src/href is a data: URI, no scripts, no stylesheets to fetch
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text) + re.findall(r"url\(([^)]*)\)", text)
    assert refs and all(ref.startswith("data:image/png;base64,") for ref in refs)
    assert "<script" not in text and "<link" not in text


def test_report_renders_in_a_real_browser_with_its_thumbnails(scanned, tmp_path):
    page, rows = scanned
    attention = [r for r in rows if r["review"] or (r["error"] or "").startswith("not a digit")]
    state = open_in_browser(page, tmp_path / "report.png")
    assert state["title"].startswith("digitscan report: job ")
    assert state["cells"] == len(attention)
    # a scan and the model's 28x28 view per cell, decoded and laid out by the browser
    assert state["images"] == 2 * len(attention) == state["rendered"] == state["visible"]
    assert state["error_rows"] == sum(bool(r["error"]) for r in rows)
    assert state["bars"] == 10 + 20  # digits, confidence bins
    assert state["fetched"] == []  # nothing loaded from outside the file
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_from_a_results_file_or_a_job_in_redis(scanned, tmp_path, redis_url, shipped_model,
                                                     mnist):
    page, rows = scanned
    jsonl = page.parent / "r.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["report", str(jsonl), "--out", str(tmp_path / "again.html")])
    assert result.exit_code == 0, result.output
    assert f"{len(rows)} images" in result.output
    # a job in Redis, by id (results not drained by a waiting client)
    from digitscan import Client
    from digitscan.worker.embedded import LocalWorkers
    from digitscan.worker.settings import Settings

    settings = Settings(broker_url=redis_url, model=str(shipped_model), concurrency=1,
                        queue=f"r-{uuid.uuid4().hex[:6]}")
    with LocalWorkers(settings.to_env(), 1, tmp_path / "w.log") as pool:
        pool.wait_ready()
        job = Client(settings=settings).submit_bytes(
            {f"{i}.png": png(mnist.test_images[i]) for i in range(12)}, review_below=0.9999)
        assert job.wait(timeout=120)["complete"]
    result = runner.invoke(cli, ["report", job.id, "--out", str(tmp_path / "job.html"),
                                 "--broker", redis_url])
    assert result.exit_code == 0, result.output
    assert "12 images" in result.output
    text = (tmp_path / "job.html").read_text()
    # images sent from memory cannot be read again: the cells say so instead of a picture
    assert text.count("image no longer readable") == text.count("<div class='cell ") > 0
    # a path that is no report is refused before any work
    result = runner.invoke(cli, ["report", job.id, "--out", str(tmp_path / "r.pdf")])
    assert result.exit_code == 1 and "must end in .html" in result.output
