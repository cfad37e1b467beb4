"""A test-only Celery app: the production app with a task that can be told to misbehave.

``celery -A tests.faultapp worker`` reads its settings like ``digitscan.worker.app`` and
two test variables that nothing in the package knows about:

    DIGITSCAN_TEST_POISON   a chunk with an item whose source contains this string kills
                            its own process (as a decoder segfault or the OOM killer would)
    DIGITSCAN_TEST_DELAY_S  every chunk sleeps this long first, so it can be interrupted
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from digitscan.worker.celeryapp import make_app
from digitscan.worker.embedded import LocalWorkers
from digitscan.worker.messages import Chunk
from digitscan.worker.settings import Settings
from digitscan.worker.tasks import ChunkTask

ROOT = Path(__file__).resolve().parent.parent


class FaultyChunkTask(ChunkTask):
    def classify(self, chunk: Chunk) -> list[dict]:
        poison = os.environ.get("DIGITSCAN_TEST_POISON", "")
        if poison and any(poison in item.source for item in chunk.items):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(float(os.environ.get("DIGITSCAN_TEST_DELAY_S", "0") or 0))
        return super().classify(chunk)


def faulty_workers(env: dict[str, str], concurrency: int, logfile: Path, **kw) -> LocalWorkers:
    """LocalWorkers running this app; ``env`` may hold the DIGITSCAN_TEST_* variables."""
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                              os.environ.get("PYTHONPATH")]))}
    return LocalWorkers(env, concurrency, logfile, app_module="tests.faultapp", **kw)


app = make_app(Settings.from_env(), task_class=FaultyChunkTask)
