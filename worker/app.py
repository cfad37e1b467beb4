"""``celery -A digitscan.worker.app worker``: the one module that reads ``DIGITSCAN_*``.

Everything else gets its settings passed in (``make_app(settings)``); ``digitscan worker``
builds its settings from its options and does not import this module.
"""

from __future__ import annotations

import sys

from digitscan import blasthreads  # noqa: F401 - before numpy
from digitscan.errors import ConfigError
from digitscan.worker.celeryapp import make_app
from digitscan.worker.settings import Settings

try:
    settings = Settings.from_env()
except ConfigError as exc:
    sys.exit(f"error: {exc}")  # one line, no traceback, before Celery starts anything

app = make_app(settings)
if not settings.concurrency:
    # As `digitscan worker` does: a few processes on a GPU, not Celery's one a core (a -c on
    # the command line still wins). An unavailable provider is refused by the worker's
    # start-up step, in one line.
    from digitscan.errors import ProviderError
    from digitscan.worker.model import default_processes, resolve_providers

    try:
        app.conf.worker_concurrency = default_processes(resolve_providers(settings.provider))
    except ProviderError:
        pass
