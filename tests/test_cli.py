"""The CLI as people meet it: one-line errors, no tracebacks, exit codes."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from digitscan.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "digitscan.cli", *args], capture_output=True,
                          text=True, timeout=120)


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
])
def test_expected_failures_are_one_clear_line(args, message):
    result = run(*args)
    assert result.returncode in (1, 2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_says_what_to_do(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "digitscan train" in result.output


def test_submit_with_missing_inputs_submits_nothing(tmp_path):
    result = run("submit", str(tmp_path / "nothing-here"), "--broker", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "input not found" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_every_command():
    out = CliRunner().invoke(main, ["--help"]).output
    for name in ("data", "train", "evaluate", "export", "validate", "worker", "submit", "status",
                 "results", "scan"):
        assert name in out
