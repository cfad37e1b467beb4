"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

What `timeout`, CI, systemd, docker (SIGTERM) and a closed terminal (SIGHUP) send unwinds
like Ctrl-C, so everything a command started is stopped and cleaned up. The handler raises
``Stopped`` in the main thread, but Python drops an exception raised while a finaliser
(``__del__``, a weakref callback) runs, and then the command would go on as if no signal
had come: so the signal is also remembered, and long loops call ``check()``.
"""

from __future__ import annotations

import signal

_received: int | None = None


class Stopped(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, _frame) -> None:
    global _received
    _received = signum
    raise Stopped(signum)


def install() -> None:
    """Turn SIGTERM and SIGHUP into ``Stopped`` in this process (the CLI's main thread)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)


def received() -> int | None:
    return _received


def check() -> None:
    """Raise ``Stopped`` again if a signal came and its exception was lost."""
    if _received is not None:
        raise Stopped(_received)
