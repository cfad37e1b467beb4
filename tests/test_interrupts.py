"""SIGTERM/SIGHUP stop a command like Ctrl-C, even when Python drops the exception."""

import subprocess
import sys

CODE = """
import os, signal
from digitscan import interrupts

interrupts.install()

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
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


def test_a_signal_lost_in_a_finaliser_is_still_seen():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    # The case itself: the exception was swallowed (execution went on), and no traceback shows.
    assert out.stdout.split("\n")[:2] == ["went on", "stopped 15"]
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr


def test_other_exceptions_lost_in_a_finaliser_still_show():
    # The test of the test: the quiet hook hides our Stopped only, not a real bug in a __del__.
    code = CODE.replace("os.kill(os.getpid(), signal.SIGTERM)", "raise ValueError('a real bug')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Exception ignored" in out.stderr and "ValueError: a real bug" in out.stderr
    assert out.stdout.split("\n")[:1] == ["went on"]
