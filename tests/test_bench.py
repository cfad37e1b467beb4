"""make bench's worker-count sweep (bench/gpu_sweep.py `here`): real scans on sets written
from MNIST and the fonts, and the one line where the sweep asks for a provider that is not
offered."""

from __future__ import annotations

import json

from bench import gpu_sweep


def test_the_sweep_scans_every_image_of_each_set(tmp_path, mnist_root):
    out = tmp_path / "rows.json"
    gpu_sweep.here(mnist_root, str(out), {"cpu": (1, 2)}, mnist_images=40, cells=30)
    rows = json.loads(out.read_text())
    assert [(r["set"], r["workers"]) for r in rows] == [("mnist", 1), ("mnist", 2),
                                                        ("cells", 1), ("cells", 2)]
    for row in rows:
        assert row["images"] == (40 if row["set"] == "mnist" else 30), row
        assert row["images_per_s"] > 0 and row["cpu_us_per_image"]["client"] > 0


def test_without_the_cuda_provider_the_sweep_says_so_and_scans_nothing(tmp_path, mnist_root,
                                                                        monkeypatch, capsys):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    scans = []
    monkeypatch.setattr(gpu_sweep, "scan", lambda *a, **k: scans.append(a))
    out = tmp_path / "rows.json"
    gpu_sweep.here(mnist_root, str(out), {"cpu": (2,), "cuda": (1,)}, mnist_images=5, cells=5)
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "no CUDA provider" in said[0]
    assert not scans and not out.exists()
