"""Client-side plain functions: the status line and chunking."""

from __future__ import annotations

from digitscan.worker.client import Chunker, _clock, found_in, job_row, status_line
from digitscan.worker.inputs import find_entries
from digitscan.worker.settings import SubmitOptions

NOW = 1_800_000_000.0
INFO = {"job": "j" * 32, "total": 1000, "done": 250, "errors": 3, "dead_chunks": 0,
        "rate": 125.4, "eta_s": 6.0, "complete": False, "created": NOW - 100, "last": NOW - 1,
        "cancelled": None}


def test_status_line_running_complete_stalled_cancelled():
    assert status_line(INFO, NOW) == (f"job {'j' * 32}: running, 250/1000 done, 3 errors, "
                                      "125 images/s, ETA 6 s")
    done = {**INFO, "done": 1000, "eta_s": None, "complete": True, "dead_chunks": 2}
    assert status_line(done, NOW) == (f"job {'j' * 32}: complete, 1000/1000 done, 3 errors, "
                                      "2 chunks dead-lettered, 125 images/s, ETA -")
    stalled = status_line({**INFO, "last": NOW - 600}, NOW)
    assert f"stalled since {_clock(NOW - 600)} (600 s without a result" in stalled
    assert stalled.endswith("ETA -")  # no guess
    cancelled = status_line({**INFO, "cancelled": NOW - 5}, NOW)
    assert cancelled.startswith(f"job {'j' * 32}: cancelled at {_clock(NOW - 5)}, 250/1000 done")


def test_job_rows_say_state_and_age():
    assert job_row(INFO, NOW) == f"{'j' * 32}  running          250/1000          2 min old"
    assert " stalled " in job_row({**INFO, "last": NOW - 600}, NOW)
    assert " cancelled " in job_row({**INFO, "cancelled": NOW}, NOW)


def test_chunker_splits_by_count_and_bytes_and_keeps_unreadable_items_as_errors(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"x" * 10)
    (tmp_path / "5-big.png").write_bytes(b"x" * 200)
    def found():
        return found_in(find_entries([str(tmp_path)]), 100, False)

    chunker = Chunker(found(), "c" * 32, SubmitOptions(chunk_size=10, max_chunk_bytes=25))
    chunks = list(chunker)
    assert [[i.index for i in c.items] for c in chunks] == [[0, 1, 2], [3, 4]]  # 30 B >= 25 B
    assert [c.chunk for c in chunks] == [0, 1]
    assert [len(c.items) for c in Chunker(found(), "c" * 32, SubmitOptions(chunk_size=2))] \
        == [2, 2, 1]
    assert chunker.total == 6
    assert [(e["index"], e["error"]) for e in chunker.errors] == \
        [(5, "image too large: 200 bytes; the limit is 100")]
