"""SIGTERM/SIGHUP/Ctrl-C stop a command, even when Python drops the exception."""

import signal
import subprocess
import sys

import pytest

CODE = """
import os, signal
from digitscan import interrupts

interrupts.install()

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGNAL)
        for _ in range(10_000):  # the handler runs here, inside __del__: Python drops Stopped
            pass

obj = Finalised()
del obj
print("went on")
try:
    interrupts.check()
except interrupts.Stopped as exc:
    print("stopped", exc.signum)
"""


def run(code: str, sigint=signal.SIG_DFL) -> subprocess.CompletedProcess:
    # As a person at a terminal has it; a shell's background job has SIGINT ignored.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_lost_in_a_finaliser_is_still_seen(signame):
    out = run(CODE.replace("SIGNAL", signame))
    # The case itself: the exception was swallowed (execution went on), and no traceback shows.
    assert out.stdout.split("\n")[:2] == ["went on", f"stopped {signal.Signals[signame].value}"]
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr


def test_other_exceptions_lost_in_a_finaliser_still_show():
    # The test of the test: the quiet hook hides our Stopped only, not a real bug in a __del__.
    code = CODE.replace("os.kill(os.getpid(), signal.SIGNAL)", "raise ValueError('a real bug')")
    out = run(code)
    assert "Exception ignored" in out.stderr and "ValueError: a real bug" in out.stderr
    assert out.stdout.split("\n")[:1] == ["went on"]


def test_an_ignored_ctrl_c_stays_ignored():
    out = run(CODE.replace("SIGNAL", "SIGINT"), sigint=signal.SIG_IGN)
    assert out.returncode == 0 and out.stdout.split("\n")[:2] == ["went on", ""], out
