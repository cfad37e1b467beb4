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
    assert "Exception ignored" in out.stderr  # the case itself: the exception was swallowed
    assert out.stdout.split("\n")[:2] == ["went on", "stopped 15"]
