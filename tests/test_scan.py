"""Integration: `digitscan scan` as a user runs it: private Redis, real worker processes."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .hostile import ARCHIVE_MEMBERS, write_corpus

pytestmark = pytest.mark.integration
RNG = np.random.default_rng(5)


def scan(*args, timeout=300, **popen):
    return subprocess.run([sys.executable, "-m", "digitscan.cli", "scan", *args],
                          capture_output=True, text=True, timeout=timeout, **popen)


@pytest.mark.parametrize("workers", [2, 8])
def test_mixed_good_and_hostile_files_get_exactly_one_line_each(tmp_path, mnist, shipped_model,
                                                                workers):
    """With 2 workers the small files travel inline; from BY_PATH_FROM_WORKERS (8) every
    local file goes by path: the same answer for every hostile file either way."""
    from digitscan.worker.scan import BY_PATH_FROM_WORKERS

    assert (workers >= BY_PATH_FROM_WORKERS) == (workers == 8)
    corpus = tmp_path / "corpus"
    expected = write_corpus(corpus, mnist)
    out = tmp_path / "results.jsonl"
    result = scan(str(corpus), "--out", str(out), "--workers", str(workers), "--model",
                  str(shipped_model))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    files = [os.fsdecode(n) for n in os.listdir(os.fsencode(corpus))]
    assert len(rows) == len(files)  # archives here hold one member each
    got = {Path(r["source"]).name if ".zip:" not in r["source"]
           else Path(r["source"].split(".zip:")[0]).name + ".zip:" + r["source"].split(".zip:")[1]: r
           for r in rows}
    wanted = {k: v for k, v in expected.items() if v is not None} | ARCHIVE_MEMBERS
    assert set(got) == set(wanted)
    for name, want in wanted.items():
        row = got[name]
        if isinstance(want, int):
            assert (row["digit"], row["error"]) == (want, None), (name, row)
        else:
            assert row["digit"] is None and row["error"].startswith(want), (name, row)
    assert "images, " in result.stdout and "errors" in result.stdout


def test_csv_output_and_labelled_accuracy(tmp_path, mnist, shipped_model):
    from digitscan.trainer.pngs import write_test_pngs

    write_test_pngs(mnist, tmp_path / "png", limit=300)
    out = tmp_path / "r.csv"
    # A high review threshold, so that the review count it checks is not zero.
    result = scan(str(tmp_path / "png"), "--out", str(out), "--model", str(shipped_model),
                  "--chunk-size", "16", "--labels", "folders", "--review-below", "0.99")
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300
    correct = sum(r["digit"] != "" and int(r["digit"]) == int(Path(r["source"]).parent.name)
                  for r in rows)
    assert correct >= 294
    # The summary counts the very rows written (one pass): the same figures, exactly.
    review = sum(r["review"] == "True" for r in rows)
    errors = sum(r["error"] != "" for r in rows)
    assert review >= 5, review
    assert f"300 images, {review} to review, {errors} errors" in result.stdout, result.stdout
    assert f"accuracy {100 * correct / 300:.2f}% on 300 labelled" in result.stdout, result.stdout


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_a_signal_stops_everything_it_started(tmp_path, mnist, shipped_model, request, signame):
    """Ctrl-C, and what `timeout`, CI, systemd, docker (SIGTERM) and a closed terminal
    (SIGHUP) send, clean up alike, the scan's temporary folder too; after a SIGKILL, which
    cannot be handled, the private Redis and the workers still exit: they watch their
    parent (its temporary folder stays, here in the test's own)."""
    import signal
    import time

    import redis

    from digitscan.trainer.pngs import write_test_pngs

    # The whole test set, four times, in 8-image chunks: ~12 s of work (twice was ~6 s once
    # the normalisation got faster, and one run in a full suite saw the job end first), so
    # the signal lands mid-job even when the first stored results are seen late.
    write_test_pngs(mnist, tmp_path / "png")
    # A shell that runs us in the background may have set SIGINT to "ignore", which the
    # child would inherit; a person at a terminal has the default, so give it that.
    scratch = tmp_path / "tmp"  # the scan's TMPDIR: what it leaves is seen, and not in /tmp
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "digitscan.cli", "scan", *[str(tmp_path / "png")] * 4,
                             "--out", str(tmp_path / "r.jsonl"), "--chunk-size", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(scratch)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    request.addfinalizer(lambda: (proc.kill(), proc.communicate()))
    known: set[int] = set()

    def started() -> dict[int, str]:
        """Processes this scan started, and theirs: its Celery parent (forked from it,
        under the scan's own command line), that parent's pool, and its redis-server. Each is
        found as a descendant of the scan while the scan lives, and by its pid once orphaned
        (a SIGKILL leaves them to init)."""
        table = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != proc.pid:
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError):
                    continue
                table[int(entry.name)] = (ppid, cmdline)
        grew = True
        while grew:  # descendants, whatever order /proc lists them in
            new = {pid for pid, (ppid, _) in table.items()
                   if pid not in known and (ppid == proc.pid or ppid in known)}
            known.update(new)
            grew = bool(new)
        return {pid: cmdline for pid, (_, cmdline) in table.items() if pid in known}

    def results_stored() -> int:
        """Images with a result so far, read from the scan's own Redis."""
        for cmdline in started().values():
            if "redis-server" in cmdline:
                # "redis-server HOST:PORT" once it has retitled itself; its own argv
                # ("... --port PORT ...") for the moment before.
                words = cmdline.split()
                port = int(words[words.index("--port") + 1] if "--port" in words
                           else words[1].rsplit(":", 1)[1])
                client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
                try:
                    # the seen bitmap: results themselves are drained into the output as they come
                    return sum(client.bitcount(k) for k in client.scan_iter("digitscan:job:*:seen"))
                except redis.RedisError:
                    return 0
                finally:
                    client.close()
        return 0

    deadline = time.monotonic() + 120
    while results_stored() == 0:  # mid-job: the workers have stored their first chunks
        assert proc.poll() is None and time.monotonic() < deadline, "scan ended before ^C"
        time.sleep(0.05)
    # The test sees what it checks: the Redis, and the Celery parent with its two pool
    # process or processes (the scan's default: a worker a core).
    found = started()
    assert any("redis-server" in c for c in found.values()), found
    assert sum("redis-server" not in c for c in found.values()) >= 2, found
    signum = signal.Signals[signame]
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + signum and "Traceback" not in err, (out, err[-2000:])
        assert ("interrupted" if signum == signal.SIGINT else f"stopped by {signame}") in err
    deadline = time.monotonic() + 10
    while started():  # children reaped by now, or about to be
        assert time.monotonic() < deadline, f"left running: {started()}"
        time.sleep(0.2)
    assert not (tmp_path / "r.jsonl").exists()  # no half-written results file
    left = left_in(scratch)
    if signum == signal.SIGKILL:
        assert len(left) == 1 and left[0].startswith("digitscan-scan-"), left
    else:
        assert not left, left


def left_in(tmpdir: Path) -> list[str]:
    """What processes left in their TMPDIR, but for onnxruntime's own session file (`.ses`:
    one per TMPDIR, written at import and used again by every process after)."""
    return sorted(p.name for p in tmpdir.iterdir() if p.name != ".ses")


def test_a_finished_scan_leaves_nothing_in_the_temporary_folder(tmp_path, mnist, shipped_model):
    """Its Redis, its workers' logs and what its workers' Celery parent makes there (billiard's
    pymp-* folder, which only that process's exit handlers would remove) all go with the
    scan's own temporary folder."""
    folder, scratch = tmp_path / "png", tmp_path / "tmp"
    folder.mkdir()
    scratch.mkdir()
    for i, image in enumerate(mnist.test_images[:20]):
        Image.fromarray(255 - image).save(folder / f"{i}.png")
    result = subprocess.run([sys.executable, "-m", "digitscan.cli", "-q", "scan", str(folder),
                             "--out", str(tmp_path / "r.jsonl"), "--model", str(shipped_model)],
                            capture_output=True, text=True, env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 20
    assert not left_in(scratch), left_in(scratch)


def test_scan_reads_boxed_and_printed_cells_and_names_what_is_not_a_digit(tmp_path, mnist,
                                                                         shipped_model):
    """Form cells as users scan them, through `digitscan scan`: boxed handwriting and printed
    digits get digits and a review flag; letters, symbols, scribbles get `not a digit`."""
    from digitscan.trainer import cells

    _, fonts = cells.split_fonts()
    folder = tmp_path / "cells"
    folder.mkdir()
    boxed = cells.boxed_cells(mnist.test_images[:60], seed=11)
    printed, printed_labels = cells.printed_cells(fonts, 60, seed=12)
    negatives, _ = cells.negative_cells(fonts, mnist.test_images, 60, seed=13)
    truth = {}
    for kind, items, labels in (("boxed", boxed, mnist.test_labels[:60]),
                                ("printed", printed, printed_labels),
                                ("none", negatives, [None] * 60)):
        for i, (data, label) in enumerate(zip(items, labels)):
            name = f"{kind}-{i:03d}.img"
            (folder / name).write_bytes(data)
            truth[name] = None if label is None else int(label)
    out = tmp_path / "r.jsonl"
    result = scan(str(folder), "--out", str(out), "--model", str(shipped_model))
    assert result.returncode == 0, result.stderr
    rows = {Path(r["source"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(rows) == 180 and all(isinstance(r["review"], bool) for r in rows.values())
    digits = [n for n, t in truth.items() if t is not None]
    right = sum(rows[n]["digit"] == truth[n] for n in digits)
    flagged = sum(rows[n]["digit"] is None or rows[n]["review"] for n in truth if truth[n] is None)
    assert right >= 0.83 * len(digits), right  # 104/120 here; 92 % on the 10,000-cell sets
    assert flagged >= 0.8 * 60, flagged
    assert any(rows[n]["error"] and rows[n]["error"].startswith("not a digit") for n in truth
               if truth[n] is None)
    assert "to review" in result.stdout and "not a digit" in result.stdout


def test_accuracy_only_when_labels_are_asked_for(tmp_path, mnist, shipped_model):
    """Batch folders named 0-4 are not labels: no accuracy is claimed without --labels. A
    labels file (JSON or CSV, by source or file name) gives one."""
    for batch in range(5):
        (tmp_path / "in" / str(batch)).mkdir(parents=True)
    truth = {}
    for i in range(50):
        name = f"{i:03d}.png"
        Image.fromarray(255 - mnist.test_images[i]).save(tmp_path / "in" / str(i % 5) / name)
        truth[name] = int(mnist.test_labels[i])
    plain = scan(str(tmp_path / "in"), "--out", str(tmp_path / "a.jsonl"), "--model",
                 str(shipped_model))
    assert plain.returncode == 0 and "labelled" not in plain.stdout, plain.stderr
    (tmp_path / "labels.json").write_text(json.dumps(truth))
    with open(tmp_path / "labels.csv", "w") as f:
        f.write("source,digit\n" + "".join(f"{k},{v}\n" for k, v in truth.items()))
    for labels in ("labels.json", "labels.csv"):
        run = scan(str(tmp_path / "in"), "--out", str(tmp_path / "b.jsonl"), "--model",
                   str(shipped_model), "--labels", str(tmp_path / labels))
        assert run.returncode == 0 and "on 50 labelled" in run.stdout, run.stderr
        score = float(run.stdout.split("accuracy ")[1].split("%")[0])
        assert score >= 95  # the real score, not ~10 % from batch folder names
    bad = scan(str(tmp_path / "in"), "--out", str(tmp_path / "c.jsonl"), "--labels", "x.txt")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --labels x.txt: give")


def test_scan_on_a_shared_broker_uses_a_queue_of_its_own(tmp_path, mnist, shipped_model):
    """Another worker listens on the default queue of the same Redis: it gets none of this
    scan's chunks (before, it answered a third of them with its own model)."""
    from digitscan.worker.embedded import EmbeddedRedis, LocalWorkers
    from digitscan.worker.settings import Settings

    (tmp_path / "in").mkdir()
    for i in range(64):
        Image.fromarray(255 - mnist.test_images[i]).save(tmp_path / "in" / f"{i:03d}.png")
    with EmbeddedRedis(tmp_path / "redis") as server:
        other = Settings(broker_url=server.url, model=str(shipped_model), concurrency=1)
        with LocalWorkers(other.to_env(), 1, tmp_path / "other.log", name="other") as foreign:
            foreign.wait_ready()
            run = scan(str(tmp_path / "in"), "--out", str(tmp_path / "r.jsonl"), "--model",
                       str(shipped_model), "--broker", server.url, "--chunk-size", "4")
        assert run.returncode == 0, run.stderr
        assert " received" not in foreign.logfile.read_text()
    assert (tmp_path / "r.jsonl").read_text().count("\n") == 64


def test_scan_hands_large_files_to_its_workers_by_path(tmp_path, mnist, shipped_model):
    """Files over REFERENCE_ABOVE go to scan's own workers as paths, so their bytes never
    cross Redis; the small ones travel inline. Sources stay as the user gave them."""
    import redis

    from digitscan.worker.embedded import EmbeddedRedis
    from digitscan.worker.scan import REFERENCE_ABOVE

    folder = tmp_path / "in"
    folder.mkdir()
    sizes = {}
    for i in range(24):
        image = Image.fromarray(255 - mnist.test_images[i])
        if i % 2:  # a big scan of the digit: a noisy 280 px PNG, far over the threshold
            noisy = np.asarray(image.resize((280, 280)), np.int16) + RNG.integers(-6, 7, (280, 280))
            image = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
        image.save(folder / f"{i:03d}.png")
        sizes[f"in/{i:03d}.png"] = (folder / f"{i:03d}.png").stat().st_size
    big = sum(s for s in sizes.values() if s > REFERENCE_ABOVE)
    small = sum(s for s in sizes.values() if s <= REFERENCE_ABOVE)
    assert big > 20 * small and min(s for s in sizes.values() if s > REFERENCE_ABOVE) > 10_000
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        before = client.info("stats")["total_net_input_bytes"]
        run = subprocess.run([sys.executable, "-m", "digitscan.cli", "scan", "in", "--out",
                              "r.jsonl", "--model", str(shipped_model), "--broker", server.url],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        sent = client.info("stats")["total_net_input_bytes"] - before
    # Inline, the big files alone would have sent Redis 2.3x their bytes (the queued message
    # and the pending copy): here far less than the big files' bytes reached Redis at all.
    assert sent < 0.5 * big, (sent, big)
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == list(sizes)
    assert sum(r["digit"] == mnist.test_labels[i] for i, r in enumerate(rows)) >= 23


CPU, CUDA = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(("providers", "cores", "workers"), [
    (CPU, 1, 1), (CPU, 2, 2), (CPU, 16, 16), (CPU, 64, 16), (CUDA, 2, 2), (CUDA, 16, 4),
])
def test_scan_takes_a_worker_a_core_by_default_fewer_on_cuda(providers, cores, workers):
    from digitscan.worker.scan import default_workers

    assert default_workers(providers, cores) == workers


def test_without_workers_scan_sizes_its_pool_to_the_cores_it_may_use(tmp_path, mnist, shipped_model):
    """No --workers: as many as the scan's CPUs (its affinity, as a container's CPU set
    or taskset gives it), said in the summary."""
    from digitscan.trainer.pngs import write_test_pngs

    write_test_pngs(mnist, tmp_path / "png", limit=40)
    one_cpu = {min(os.sched_getaffinity(0))}
    result = scan(str(tmp_path / "png"), "--out", str(tmp_path / "r.jsonl"), "--model",
                  str(shipped_model), preexec_fn=lambda: os.sched_setaffinity(0, one_cpu))
    assert result.returncode == 0, result.stderr
    assert "images/s with 1 worker;" in result.stdout, result.stdout
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 40


def test_with_many_workers_every_local_file_goes_by_path():
    """Few workers: small files inline (the pool is the bound); many: all by path (the one
    client is, and by path it neither reads nor sends the files)."""
    from digitscan.worker.scan import BY_PATH_FROM_WORKERS, REFERENCE_ABOVE, reference_above

    assert reference_above(2) == REFERENCE_ABOVE > 0
    assert reference_above(BY_PATH_FROM_WORKERS - 1) == REFERENCE_ABOVE
    assert reference_above(BY_PATH_FROM_WORKERS) == reference_above(16) == 0
