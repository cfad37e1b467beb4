"""Test-only fault injection, inert unless a DIGITSCAN_TEST_* variable is set.

The fault tests need a chunk that kills its own process (as a decoder segfault or the
OOM killer would) and chunks slow enough to be interrupted mid-way; nothing else uses this.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from digitscan.worker.messages import Chunk

log = logging.getLogger(__name__)

POISON = os.environ.get("DIGITSCAN_TEST_POISON", "")
DELAY_S = float(os.environ.get("DIGITSCAN_TEST_DELAY_S", "0") or 0)


def inject(chunk: Chunk) -> None:
    if POISON and any(POISON in item.source for item in chunk.items):
        log.warning("job %s chunk %d: test poison kills this process", chunk.job, chunk.chunk)
        os.kill(os.getpid(), signal.SIGKILL)
    if DELAY_S:
        time.sleep(DELAY_S)
