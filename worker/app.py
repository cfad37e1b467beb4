"""The Celery app. ``celery -A digitscan.worker.app worker`` and ``digitscan worker`` both start here.

Settings come from ``DIGITSCAN_*`` variables (see ``worker.settings``). The model is
checked against its card in the parent at start-up (cheap: a sha256), but loaded only
in each pool process after the fork, so no onnxruntime (or CUDA) state crosses a fork.
"""

from __future__ import annotations

import logging

from celery import Celery, bootsteps, signals

from digitscan.worker.celeryconfig import celery_config
from digitscan.worker.settings import Settings

log = logging.getLogger(__name__)


def make_app(settings: Settings) -> Celery:
    app = Celery("digitscan", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.digitscan_settings = settings
    return app


settings = Settings.from_env()
app = make_app(settings)
app.conf.include = ["digitscan.worker.tasks"]


class VerifyModel(bootsteps.StartStopStep):
    """Refuse to start with a tampered or missing model, or an unavailable provider.

    A bootstep, not a signal handler: Celery logs and swallows exceptions raised by signal
    handlers, while a failing bootstep stops the worker with a non-zero exit status.
    """

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        from digitscan.modelcard import verify_model_file
        from digitscan.worker.model import resolve_providers

        card = verify_model_file(settings.model)
        resolve_providers(settings.provider)
        log.info("model %s verified (sha256 %s)", settings.model, card["sha256"][:16])


app.steps["worker"].add(VerifyModel)


@signals.worker_process_init.connect
def load_model_in_child(**_):
    from digitscan.worker.tasks import classify_chunk_task

    classify_chunk_task.classifier  # noqa: B018 - loads and warms up before taking work
