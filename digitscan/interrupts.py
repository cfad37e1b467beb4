"""SIGTERM and SIGHUP stop a command the way Ctrl-C does, and none of them is lost.

What `timeout`, CI, systemd, docker (SIGTERM) and a closed terminal (SIGHUP) send unwinds
like Ctrl-C, so everything a command started is stopped and cleaned up. The handler raises
``Stopped`` in the main thread, but Python drops an exception raised while a finaliser
(``__del__``, a weakref callback) runs, and then the command would go on as if no signal
had come: so the signal is also remembered, and long loops call ``check()``. Python also
prints such a dropped exception with its traceback ("Exception ignored in ..."): a signal
that lands while Celery's ``AsyncResult.__del__`` unsubscribes is not a bug, so ``install``
keeps those quiet and leaves every other unraisable exception to the default hook.
"""

from __future__ import annotations

import signal
import sys

_received: int | None = None


class Stopped(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, _frame) -> None:
    global _received
    _received = signum
    raise Stopped(signum)


def _unraisable(unraisable) -> None:
    # Only our own Stopped is silenced: it is remembered in _received and raised by check().
    if not isinstance(unraisable.exc_value, Stopped):
        sys.__unraisablehook__(unraisable)


def install() -> None:
    """Turn SIGTERM, SIGHUP and Ctrl-C into ``Stopped`` in this process (the CLI's main
    thread). Ctrl-C too: Python's own KeyboardInterrupt is as easily dropped by a finaliser,
    and then a scan would finish as if nobody had pressed it. Where SIGINT was ignored when
    Python started (a shell's background job), it stays ignored, as Python leaves it."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop)
    sys.unraisablehook = _unraisable


def received() -> int | None:
    return _received


def check() -> None:
    """Raise ``Stopped`` again if a signal came and its exception was lost."""
    if _received is not None:
        raise Stopped(_received)
