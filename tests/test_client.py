"""Client-side plain functions: the status line and chunking."""

from __future__ import annotations

from digitscan.worker.client import Chunker, status_line
from digitscan.worker.inputs import find_entries
from digitscan.worker.settings import SubmitOptions

INFO = {"job": "j" * 32, "total": 1000, "done": 250, "errors": 3, "dead_chunks": 0,
        "rate": 125.4, "eta_s": 6.0, "complete": False}


def test_status_line_running_and_complete():
    assert status_line(INFO) == (f"job {'j' * 32}: running, 250/1000 done, 3 errors, "
                                 "125 images/s, ETA 6 s")
    done = {**INFO, "done": 1000, "eta_s": None, "complete": True, "dead_chunks": 2}
    assert status_line(done) == (f"job {'j' * 32}: complete, 1000/1000 done, 3 errors, "
                                 "2 chunks dead-lettered, 125 images/s, ETA -")


def test_chunker_splits_by_count_and_bytes_and_keeps_unreadable_items_as_errors(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"x" * 10)
    (tmp_path / "5-big.png").write_bytes(b"x" * 200)
    chunker = Chunker(find_entries([str(tmp_path)]), "c" * 32, 100,
                      SubmitOptions(chunk_size=10, max_chunk_bytes=25))
    chunks = list(chunker)
    assert [[i.index for i in c.items] for c in chunks] == [[0, 1, 2], [3, 4]]  # 30 B >= 25 B
    assert [c.chunk for c in chunks] == [0, 1]
    assert list(Chunker(find_entries([str(tmp_path)]), "c" * 32, 100, SubmitOptions(chunk_size=2)))
    assert [len(c.items) for c in Chunker(find_entries([str(tmp_path)]), "c" * 32, 100,
                                          SubmitOptions(chunk_size=2))] == [2, 2, 1]
    assert chunker.total == 6
    assert [(e["index"], e["error"]) for e in chunker.errors] == \
        [(5, "image too large: 200 bytes; the limit is 100")]
