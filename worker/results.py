"""The result line, one per image, and the files it is written to.

Every result line in Redis, in a results file and in the Python API has these fields, in
this order; ``index`` (the item's place in the job) is the key it is stored under. A new
output format is a new ``Writer`` here and nothing else.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from digitscan.errors import ConfigError
from digitscan.files import replacing, writable_folder

RESULT_FIELDS = ("job", "source", "digit", "confidence", "review", "error", "model")


def result_line(job: str, index: int, source: str, model: str | None, *, digit: int | None = None,
                confidence: float | None = None, review: bool = False,
                error: str | None = None) -> dict:
    """One image's result, with its ``index``: a digit, its calibrated probability and
    whether a person should look at it (``review``: the probability is below the job's
    threshold), or an error (``not a digit``, ``corrupt image``, ...)."""
    return {"index": index, "job": job, "source": source, "digit": digit,
            "confidence": confidence, "review": review, "error": error, "model": model}


def error_line(job: str, index: int, source: str, error: Exception | str,
               model: str | None = None) -> dict:
    return result_line(job, index, source, model, error=str(error))


class JsonlWriter:
    def __init__(self, f: IO[str]):
        self.f = f

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row) + "\n")


class CsvWriter:
    def __init__(self, f: IO[str]):
        self.writer = csv.DictWriter(f, RESULT_FIELDS, extrasaction="ignore")
        self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)


WRITERS = {".jsonl": JsonlWriter, ".csv": CsvWriter}
STDOUT = "-"  # --out -: JSON lines on standard output, for a pipe (messages go to stderr)


def to_stdout(out: str | Path) -> bool:
    return str(out) == STDOUT


def check_results_path(out: str | Path) -> Path:
    """Refuse a results file name before any work is done, not after."""
    if to_stdout(out):
        return Path(STDOUT)
    out = Path(out)
    if out.suffix not in WRITERS:
        raise ConfigError(f"--out {out} must end in {' or '.join(WRITERS)} (or be - for JSON "
                          "lines on stdout).")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name ending in "
                          f"{' or '.join(WRITERS)}.")
    writable_folder(out.parent, "--out")
    return out


def read_result_file(path: str | Path) -> Iterator[dict]:
    """The result lines of a file ``write_result_file`` wrote, with their types back
    (CSV holds only text)."""
    path = Path(path)
    if path.suffix not in WRITERS:
        raise ConfigError(f"{path}: give a results file (.jsonl or .csv) or a job id.")
    try:
        f = open(path, newline="")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}.") from None
    with f:
        if path.suffix == ".jsonl":
            for number, text in enumerate(f, 1):
                try:
                    yield json.loads(text)
                except json.JSONDecodeError:
                    raise ConfigError(f"{path} line {number} is not JSON: not a results file "
                                      "digitscan wrote.") from None
            return
        reader = csv.DictReader(f)
        if reader.fieldnames != list(RESULT_FIELDS):
            raise ConfigError(f"{path}: columns {reader.fieldnames}, expected {list(RESULT_FIELDS)}: "
                              "not a results file digitscan wrote.")
        for row in reader:
            yield {"job": row["job"], "source": row["source"],
                   "digit": int(row["digit"]) if row["digit"] else None,
                   "confidence": float(row["confidence"]) if row["confidence"] else None,
                   "review": row["review"] == "True", "error": row["error"] or None,
                   "model": row["model"] or None}


def write_result_file(lines: Iterable[dict], out: str | Path) -> int:
    """Write ``lines`` (in input order) as ``out``'s format, all or nothing; return the count.
    ``-`` streams JSON lines to stdout as they come."""
    out = check_results_path(out)
    if to_stdout(out):
        return _write(lines, JsonlWriter(sys.stdout))
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as part, open(part, "w", newline="") as f:
        return _write(lines, WRITERS[out.suffix](f))


def _write(lines: Iterable[dict], writer) -> int:
    count = 0
    for line in lines:
        writer.write({k: line.get(k) for k in RESULT_FIELDS})
        count += 1
    return count
