"""The onnxruntime classifier: pinned by its card, one session per worker process."""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from digitscan.contract import INPUT_NAME, PROBS
from digitscan.devices import ORT_PROVIDERS as PROVIDERS
from digitscan.devices import check_device, provider_chain, session_providers
from digitscan.errors import ConfigError, ModelError, ProviderError
from digitscan.modelcard import verify_model_file

log = logging.getLogger(__name__)


def resolve_providers(choice: str, available: list[str] | None = None) -> list[str]:
    """auto: CUDA when onnxruntime offers it, else CPU. An explicit cuda never falls back."""
    available = ort.get_available_providers() if available is None else available
    try:
        check_device(choice, "provider")
    except ConfigError as exc:
        raise ProviderError(str(exc)) from None
    if choice == "auto":
        choice = "cuda" if PROVIDERS["cuda"] in available else "cpu"
    if PROVIDERS[choice] not in available:
        raise ProviderError(
            f"provider {choice} ({PROVIDERS[choice]}) is not offered by this onnxruntime "
            f"(available: {', '.join(available)}). Install onnxruntime-gpu with a matching CUDA, "
            "or use --provider cpu."
        )
    return provider_chain(choice)


# onnxruntime's session option for its intra-op threads' wait: "1" spins, "0" sleeps.
ALLOW_SPINNING = "session.intra_op.allow_spinning"

LOAD_CHECK_S = 300  # a model that takes longer to load than this is refused


def check_loadable(path: str | Path) -> None:
    """Raise ModelError if onnxruntime cannot load ``path`` (``start_load_check``)."""
    start_load_check(path)()


def start_load_check(path: str | Path) -> Callable[[], None]:
    """``check_loadable`` in two halves: the child starts loading now, and the function
    returned waits for its answer (raising as ``check_loadable`` does), so a worker's
    start-up goes on meanwhile (~65 ms on 2 cores).

    Refuse a model onnxruntime cannot load (a file that matches its card but is not a
    model, or needs newer operators than this onnxruntime has), before a worker takes work:
    otherwise every pool process fails to start its session and chunks vanish. Loaded in a
    forked child that exits at once, so the worker's parent never holds onnxruntime (or
    CUDA) state across its pool's fork; a fork shares the modules already imported, where a
    new interpreter took ~0.2 s to import onnxruntime again, in every worker's start-up."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: load, say why not, and leave without any clean-up of the parent's
        status = 1
        try:
            os.close(read)
            # onnxruntime's own log lines go nowhere: the reason travels on the pipe.
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            status = 0
        except BaseException as exc:  # noqa: BLE001 - whatever it is, it is the reason
            os.write(write, f"{type(exc).__name__}: {exc}".encode(errors="replace")[-2000:])
        finally:
            os._exit(status)
    os.close(write)
    started = time.monotonic()

    def answer() -> None:
        with os.fdopen(read, "rb") as f:
            # The child's reason, or the end of the pipe when it exits; never a wait for ever.
            left = LOAD_CHECK_S - (time.monotonic() - started)
            if not select.select([f], [], [], max(0.0, left))[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise ModelError(f"onnxruntime did not load {path} within {LOAD_CHECK_S} s; "
                                 "check the file and the machine's free memory.")
            said = f.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code != 0:
            lines = [line for line in said.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else (f"killed by signal {-code}" if code < 0 else
                                              f"exit status {code}")
            raise ModelError(f"onnxruntime cannot load {path} ({reason}); re-export it with "
                             "`digitscan export` or use an onnxruntime that supports it.")

    return answer


def cores() -> int:
    """CPU cores this process may use (respects affinity masks and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Images per session.run on the CPU provider. Its kernels are fastest on batches whose
# activations stay in the core's cache: on one thread, per image, the fp32 model took 43.6 us
# at 32, 66 at 128 and 104 at a chunk's 256; int8 49.6 / 51.6 / 55.8 (2 threads: 23 / 34 /
# 54 and 31 / 31 / 32); 8 was slower again (2026-11-27, AMD EPYC, AVX-512).
CPU_BATCH = 32
# A GPU is fed batches of exactly this many images (a chunk's default size), the last one
# padded with blank images: cuDNN chooses its convolution algorithms once per input shape
# (onnxruntime's default is an exhaustive search), so every other chunk size (a job's last
# chunk, a file's few readable images, the warm-up's one image) would search again, in every
# pool process. One shape, searched once at warm-up, before the worker takes work.
GPU_BATCH = 256


def batching(providers: list[str]) -> tuple[int, bool]:
    """(images per session.run, whether every run is padded to exactly that many) for a
    session on ``providers`` (the first is the one that runs the model)."""
    return (CPU_BATCH, False) if providers[0] == PROVIDERS["cpu"] else (GPU_BATCH, True)


# Pool processes sharing a GPU when nobody says how many. Each CUDA process costs ~1.6 s of
# CPU to start (an H100 host: CUDA's libraries, its context, cuDNN's search at warm-up),
# holds a context in the GPU's memory, and spends more CPU per image the more of them share
# the GPU: 60,000 MNIST PNGs there, 6.5k images/s with 4 processes and with 8, 5.8k with 16
# (an H200: 7.7k with 4, 8.0k with 8, 6.6k with 16).
CUDA_PROCESSES = 4


def default_processes(providers: list[str], available: int | None = None) -> int:
    """Pool processes for sessions on ``providers`` when none are asked for: one a core on
    the CPU provider (Celery's own default), at most ``CUDA_PROCESSES`` on a GPU."""
    available = cores() if available is None else available
    if providers[0] == PROVIDERS["cpu"]:
        return available
    return max(1, min(available, CUDA_PROCESSES))


def default_threads(processes: int, available: int | None = None) -> int:
    """Intra-op threads per process so that processes x threads = cores (at least 1 each)."""
    available = cores() if available is None else available
    return max(1, available // max(1, processes))


class Classifier:
    """An onnxruntime session over a verified digitscan model."""

    def __init__(self, model_path: str | Path, provider: str = "auto", threads: int = 1,
                 review_below: float | None = None):
        self.path = Path(model_path)
        self.card = verify_model_file(self.path)
        self.sha256 = self.card["sha256"]
        # Below this calibrated probability a digit is flagged for review: the worker's
        # setting if given, else the threshold the card chose from the error-reject curve.
        self.review_below = float(self.card.get("review_below", 0.0) if review_below is None
                                  else review_below)
        # "not a digit" only above this probability of that class (0 on older cards: the
        # plain argmax); see digitscan.contract.read_answers.
        self.not_digit_above = float(self.card.get("not_digit_above", 0.0))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # A session's extra threads wait for its next run by sleeping, not spinning (the
        # default): on the worker's small batches, between runs that each process spaces out
        # with its decoding, a spinning thread takes a core from the process's neighbours for
        # nothing. One worker, two threads, 60,000 MNIST PNGs on 2 cores: the pool's CPU 347-352
        # -> 180-216 us an image, 4.4-4.6k -> 5.0-5.7k images/s; on the 16-core GPU host two
        # workers of 8 threads each kept ten cores busy, 2,384 us of CPU an image. (No effect
        # with one thread, as every worker of a pool as large as the cores has.)
        options.add_session_config_entry(ALLOW_SPINNING, "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=session_providers(
                                                    resolve_providers(provider)))
        except ProviderError:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"onnxruntime cannot load {self.path}: {exc}") from None
        # Ask for inputs and outputs by name: a graph whose contract differs is refused
        # here, at start-up, rather than read by position into wrong answers.
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        card_outputs = [o.get("name") for o in self.card.get("outputs", [])]
        if inputs != [INPUT_NAME] or PROBS not in outputs or PROBS not in card_outputs:
            raise ModelError(f"{self.path} does not follow the digitscan model contract: inputs "
                             f"{inputs}, outputs {outputs} (card: {card_outputs}); expected input "
                             f"{INPUT_NAME!r} and an output {PROBS!r}. Export it with "
                             "`digitscan export`.")
        self.providers = self.session.get_providers()
        self.batch, self.fixed = batching(self.providers)

    def warm_up(self) -> None:
        self.predict(np.zeros((1, 28, 28), dtype=np.uint8))

    def predict(self, digits: np.ndarray) -> np.ndarray:
        """uint8 [N,28,28] (MNIST polarity) -> probabilities float32 [N,classes]: ten
        digits, and "not a digit" as an eleventh where the model has it."""
        x = np.ascontiguousarray(digits, dtype=np.uint8).reshape(-1, 1, 28, 28)
        n = len(x)
        if self.fixed and n % self.batch:
            x = np.concatenate([x, np.zeros((self.batch - n % self.batch, 1, 28, 28), np.uint8)])
        if len(x) <= self.batch:
            return self.session.run([PROBS], {INPUT_NAME: x})[0][:n]
        return np.concatenate([self.session.run([PROBS], {INPUT_NAME: x[i : i + self.batch]})[0]
                               for i in range(0, len(x), self.batch)])[:n]
