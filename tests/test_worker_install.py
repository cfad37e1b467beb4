"""The worker-only install: `pip install .[worker]` brings no torch, and scanning works."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_worker_extra_declares_no_torch():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [d for d in extras["worker"] if d.startswith(("torch", "torchvision"))]


def test_worker_modules_never_import_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            "import digitscan.worker.app, digitscan.worker.tasks, digitscan.worker.jobs\n"
            "import digitscan.worker.scan, digitscan.worker.model, digitscan.worker.imaging\n"
            "import digitscan.cli; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_worker_only_venv_scans_with_no_torch_present(tmp_path, mnist, shipped_model):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    src = tmp_path / "src"  # a clean copy: no .venv, data or build leftovers
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "data", "runs", "demo", ".git",
                                                              "*.egg-info", "build", "__pycache__"))
    install = subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"{src}[worker]"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 1e6
    assert size_mb < 400, f"worker venv is {size_mb:.0f} MB"

    from digitscan.trainer.pngs import write_test_pngs

    write_test_pngs(mnist, tmp_path / "png", limit=100)
    out = tmp_path / "r.jsonl"
    result = subprocess.run([str(venv / "bin" / "digitscan"), "scan", str(tmp_path / "png"),
                             "--out", str(out), "--model", str(shipped_model), "--workers", "1"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 100 and sum(r["digit"] is not None for r in rows) == 100
