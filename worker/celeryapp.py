"""``make_app(settings)``: the Celery app, built from settings passed in, reading nothing else.

Clients use it to publish; ``digitscan.worker.app`` (the ``celery -A`` module) and
``digitscan worker`` use it to consume. The model is checked in the worker's parent at
start-up (a sha256, cheap), but loaded only in each pool process after the fork, so no
onnxruntime (or CUDA) state crosses a fork.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import signal

import redis
from billiard.util import get_pdeathsig
from celery import Celery, bootsteps, signals

from digitscan.worker.celeryconfig import TASK_NAME, celery_config
from digitscan.worker.settings import Settings
from digitscan.worker.tasks import ChunkTask

log = logging.getLogger(__name__)


def make_app(settings: Settings, task_class: type[ChunkTask] = ChunkTask) -> Celery:
    app = Celery("digitscan", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.digitscan_settings = settings
    app.register_task(task_class())
    app.steps["worker"].add(VerifyModel)
    app.steps["worker"].add(Reconcile)
    app.steps["worker"].add(ServeMetrics)
    # One handler for every app (dispatch_uid): clients build apps by the hundred.
    signals.celeryd_init.connect(prepare_metrics, weak=False, dispatch_uid="digitscan-metrics")
    return app


def run_worker(app: Celery, args: list[str]) -> int:
    """Celery's ``worker`` command for ``app`` (``celery -A MODULE worker ARGS``), without the
    ``celery`` umbrella command around it, which imports every other subcommand first (its
    ``shell`` and ``amqp`` REPLs bring prompt_toolkit): 0.40 s of CPU at every worker's
    start on 2 cores, where the worker's own modules take 0.13. Returns its exit status."""
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker
    from click.exceptions import Exit

    try:
        worker.main(args, prog_name="celery worker", standalone_mode=False,
                    obj=CLIContext(app=app, no_color=None, workdir=None))
    except Exit as exc:
        return exc.exit_code
    return 0


def prepare_metrics(conf=None, **_) -> None:
    """Celery's first signal in a starting worker, before its pool forks: where the pool
    processes will write their metrics must be in the environment they inherit."""
    settings = getattr(conf, "digitscan_settings", None)
    if settings is not None and settings.metrics_port:
        from digitscan.worker.metrics import prepare

        conf.digitscan_metrics_dir = prepare()


class ServeMetrics(bootsteps.StartStopStep):
    """With DIGITSCAN_METRICS_PORT, serve the pool's Prometheus metrics from the main
    process; a port that cannot be bound stops the worker at start, in one line."""

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.exporter = None
        settings: Settings = worker.app.conf.digitscan_settings
        if settings.metrics_port:
            from digitscan.worker.metrics import Exporter, prepare

            folder = getattr(worker.app.conf, "digitscan_metrics_dir", None) or prepare()
            try:
                self.exporter = Exporter(settings.metrics_port, folder)
            except Exception:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            log.info("serving metrics on port %d", settings.metrics_port)

    def stop(self, worker):
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None


class VerifyModel(bootsteps.StartStopStep):
    """Refuse to start with a tampered or missing model, or an unavailable provider; then
    have each pool process load the model before it takes work.

    A bootstep, not a signal handler: Celery logs and swallows exceptions raised by signal
    handlers, while a failing bootstep stops the worker with a non-zero exit status.
    """

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        from digitscan.modelcard import verify_model_file
        from digitscan.worker.model import resolve_providers, start_load_check

        settings: Settings = worker.app.conf.digitscan_settings
        card = verify_model_file(settings.model)
        # Loaded in a child while this start-up goes on (the imports, the collection below);
        # its answer is awaited at the end.
        loaded = start_load_check(settings.model)
        import digitscan.worker.classify  # noqa: F401 - once, here, shared by the pool's forks

        resolve_providers(settings.provider)
        from digitscan.worker.imaging import COMPILED

        if not COMPILED:
            log.warning("the cell cleanup's compiled steps are not installed (digitscan was "
                        "built without a C compiler): boxed cells clean ~3x slower; "
                        "reinstall it where gcc (or cc) is present")
        task = worker.app.tasks[TASK_NAME]
        task.pool_processes = worker.concurrency
        # Each pool process sets its parent-death signal (billiard) through cffi where cffi is
        # installed, and cffi first parses the C declaration with pycparser: ~90 ms of every
        # pool process's start (a third of its CPU in a 300-image scan), after the fork.
        # Reading the signal here, harmlessly, loads pycparser once for all of them.
        with contextlib.suppress(OSError):
            get_pdeathsig()
        gc.collect()  # before the freeze below (see there), while the model loads
        loaded()
        log.info("model %s verified (sha256 %s), %d pool processes", settings.model,
                 card["sha256"][:16], worker.concurrency)

        def load_model(**_) -> None:
            from digitscan.worker.embedded import die_with_parent

            # A pool process whose worker is gone has nothing to return results to.
            die_with_parent(signal.SIGKILL)
            task.classifier  # noqa: B018 - loads and warms up before taking work

        signals.worker_process_init.connect(load_model, weak=False)
        # Celery's prefork pool runs a full gc.collect() before it forks each pool process
        # (celery#2927), over everything this process holds (Celery, onnxruntime, OpenCV):
        # one after another, half of the parent's start-up CPU with 16 processes. What is
        # alive now is frozen (Python's advice before a fork without exec): those collections
        # see only what is made after, and the children's own no longer write to the pages
        # they share with this process. On 2 cores, three alternating pairs: a 10-file scan
        # with 16 workers 1.96-2.09 -> 1.37-1.56 s (the parent's CPU 1.2-1.5 -> 0.7 s), with 2
        # workers 1.25-1.34 -> 1.14-1.24 s; an 8-process worker ready in 0.94-1.19 -> 0.72-0.86
        # s, its children's private memory 252-256 -> 111-112 MB.
        gc.freeze()


class Reconcile(bootsteps.StartStopStep):
    """Every ``repair_after`` seconds one worker of the pool (whichever takes the pass
    first) re-sends the lost chunks of every running job, so a job finishes with no client
    waiting on it (``digitscan.worker.reconcile``). Runs on the worker's timer, in the
    main process; a Redis outage only skips a pass."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        from digitscan.worker.reconcile import broker_client
        from digitscan.worker.store import ResultStore

        settings: Settings = worker.app.conf.digitscan_settings
        if settings.repair_after <= 0:
            return
        # Short socket timeouts: a pass runs in the worker's event loop.
        timeouts = {"socket_timeout": 5, "socket_connect_timeout": 5}
        self.store = ResultStore.from_url(settings.results_url, settings.result_ttl, **timeouts,
                                          **settings.tls_options(settings.results_url))
        self.broker = broker_client(settings, **timeouts)
        self.tref = worker.timer.call_repeatedly(settings.repair_after, self.run, (worker,),
                                                 priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def run(self, worker) -> None:
        from digitscan.worker.reconcile import reconcile_all

        try:
            reconcile_all(self.store, self.broker, worker.app, worker.app.conf.digitscan_settings)
        except redis.RedisError as exc:
            log.warning("reconciler pass skipped: %s", exc)
