"""One chunk to result lines, with a stub classifier: no Celery, no Redis, no onnxruntime."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from digitscan.errors import ImageTooLarge, UnreadableImage
from digitscan.worker.classify import classify_chunk, read_path, read_probs
from digitscan.worker.messages import Chunk, Item
from digitscan.worker.results import RESULT_FIELDS, result_line
from digitscan.worker.settings import Limits

JOB = "a" * 32


class StubClassifier:
    """Says the digit is (number of ink pixels) % 10, with probability 0.75; counts calls."""

    sha256 = "stub-sha"
    review_below = 0.5
    not_digit_above = 0.0

    def __init__(self):
        self.batches: list[int] = []

    def predict(self, digits: np.ndarray) -> np.ndarray:
        self.batches.append(len(digits))
        probs = np.full((len(digits), 10), 0.25 / 9, np.float32)
        for row, digit in zip(probs, digits):
            row[int((digit > 0).sum()) % 10] = 0.75
        return probs


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_good_and_bad_items_each_get_one_line_and_one_batch(mnist, tmp_path):
    (tmp_path / "ref.png").write_bytes(png(255 - mnist.test_images[1]))
    items = (Item(0, "a.png", data=png(255 - mnist.test_images[0])),
             Item(1, "junk.png", data=b"not an image"),
             Item(2, "ref.png", path=str(tmp_path / "ref.png")),
             Item(3, "gone.png", path=str(tmp_path / "gone.png")),
             Item(4, "blank.png", data=png(np.full((28, 28), 255, np.uint8))))
    clf = StubClassifier()
    lines = classify_chunk(Chunk(JOB, 0, items), clf, Limits())
    assert [line["index"] for line in lines] == [0, 1, 2, 3, 4]
    assert all(set(line) == {"index", *RESULT_FIELDS} for line in lines)
    assert clf.batches == [2]  # the two readable digits, in one batch
    ok = [lines[0], lines[2]]
    assert all(isinstance(x["digit"], int) and x["confidence"] == 0.75 and x["error"] is None
               and x["review"] is False for x in ok)
    assert lines[1]["error"].startswith("unsupported format")
    assert lines[3]["error"] == "unreadable file: No such file or directory"
    assert lines[4]["error"].startswith("no digit found")
    assert all(x["digit"] is None and x["confidence"] is None for x in (lines[1], lines[3], lines[4]))
    assert {x["model"] for x in lines} == {"stub-sha"} and {x["job"] for x in lines} == {JOB}


def test_a_stuck_image_times_out_alone(mnist, monkeypatch):
    """Each image keeps its own bound inside the chunk's one handler: the stuck one gets
    its error, the images after it are read, and the handler before is back at the end."""
    import signal
    import time

    from digitscan.worker import imaging

    normalize = imaging.normalize

    def stuck_on_blank(image):  # stands for a decoder stuck on hostile input
        while np.asarray(image).min() == 255:
            time.sleep(0.01)
        return normalize(image)

    monkeypatch.setattr(imaging, "normalize", stuck_on_blank)
    before = signal.getsignal(signal.SIGALRM)
    items = (Item(0, "a.png", data=png(255 - mnist.test_images[0])),
             Item(1, "stuck.png", data=png(np.full((28, 28), 255, np.uint8))),
             Item(2, "b.png", data=png(255 - mnist.test_images[1])),
             Item(3, "stuck2.png", data=png(np.full((30, 30), 255, np.uint8))),
             Item(4, "c.png", data=png(255 - mnist.test_images[2])))
    clf = StubClassifier()
    lines = classify_chunk(Chunk(JOB, 0, items), clf, Limits(timeout_s=0.1))
    assert [line["error"] for line in lines[1::2]] == [
        "image took too long: more than 0.1 s to decode and normalise"] * 2
    assert all(line["error"] is None for line in lines[::2]) and clf.batches == [3]
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_bug_met_on_one_image_costs_that_image_only(mnist, monkeypatch, caplog):
    """An exception that is no ImageError (a bug in the cleanup, as a 1x1 image once met)
    used to fail the whole chunk, and its redeliveries dead-lettered all of its images."""
    from digitscan.worker import imaging

    normalize = imaging.normalize

    def buggy(image):
        if np.asarray(image).shape == (5, 5):
            raise ValueError("a bug on 5x5 images")
        return normalize(image)

    monkeypatch.setattr(imaging, "normalize", buggy)
    items = (Item(0, "a.png", data=png(255 - mnist.test_images[0])),
             Item(1, "odd.png", data=png(np.zeros((5, 5), np.uint8))),
             Item(2, "b.png", data=png(255 - mnist.test_images[1])))
    clf = StubClassifier()
    lines = classify_chunk(Chunk(JOB, 0, items), clf, Limits())
    assert lines[1]["digit"] is None and lines[1]["error"].startswith(
        "could not be processed: ValueError: a bug on 5x5 images")
    assert lines[0]["error"] is None and lines[2]["error"] is None and clf.batches == [2]
    assert "a bug on 5x5 images" in caplog.text and "Traceback" in caplog.text  # for the fixer


def test_storage_this_worker_cannot_see_is_its_fault_not_the_images(tmp_path):
    """A folder that is not there (shared storage not mounted on this worker) raises, so
    the chunk goes back to the queue for a worker that can read it; a file that changed
    size since submission is that image's error."""
    from digitscan.errors import InputsUnreachable

    items = (Item(0, "a.png", path=str(tmp_path / "not-mounted" / "a.png")),)
    with pytest.raises(InputsUnreachable, match="not-mounted.*mounted here"):
        classify_chunk(Chunk(JOB, 0, items), StubClassifier(), Limits())
    (tmp_path / "b.png").write_bytes(b"x" * 10)
    lines = classify_chunk(Chunk(JOB, 0, (Item(0, "b.png", path=str(tmp_path / "b.png"),
                                               size=12),)), StubClassifier(), Limits())
    assert lines[0]["error"] == "changed since submission: 10 bytes now, 12 when submitted"


def test_a_chunk_of_only_bad_items_never_calls_the_model():
    clf = StubClassifier()
    lines = classify_chunk(Chunk(JOB, 3, (Item(7, "x", data=b""),)), clf, Limits())
    assert clf.batches == [] and lines[0]["error"] == "corrupt image: empty file"


def test_read_path_refuses_oversized_files_before_reading(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"x" * 101)
    with pytest.raises(ImageTooLarge, match="101 bytes; the limit is 100"):
        read_path(str(big), Limits(max_bytes=100))
    assert read_path(str(big), Limits(max_bytes=101)) == b"x" * 101


def test_read_path_of_a_folder_is_unreadable_not_a_crash(tmp_path):
    with pytest.raises(UnreadableImage, match="Is a directory"):
        read_path(str(tmp_path), Limits())


def test_read_path_of_a_fifo_is_unreadable_and_never_waits(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.png")  # swapped in after submission: no writer will come
    with pytest.raises(UnreadableImage, match="not a regular file"):
        read_path(str(tmp_path / "pipe.png"), Limits())


def test_read_path_missing_file_in_a_readable_folder_is_the_images_error(tmp_path):
    with pytest.raises(UnreadableImage, match="^unreadable file: No such file or directory$"):
        read_path(str(tmp_path / "nope.png"), Limits())


def row(*pairs, classes=11) -> np.ndarray:
    p = np.zeros(classes, np.float32)
    for k, v in pairs:
        p[k] = v
    return p


@pytest.mark.parametrize(("probs", "review_below", "not_digit_above", "digit", "review", "error"), [
    (row((3, 0.97), (10, 0.03)), 0.9, 0.0, 3, False, None),
    (row((3, 0.6), (8, 0.3), (10, 0.1)), 0.9, 0.0, 3, True, None),       # unsure: kept, flagged
    (row((3, 0.2), (10, 0.8)), 0.9, 0.0, None, False, "not a digit: probability 0.800"),
    (row((3, 0.45), (5, 0.1), (10, 0.45)), 0.9, 0.0, 3, True, None),      # a tie goes to the digit
    (row((7, 0.9), classes=10), 0.95, 0.0, 7, True, None),                # a ten-class model
    # the card's threshold: "not a digit" only above it; below, the guess goes to review
    (row((3, 0.2), (10, 0.8)), 0.5, 0.85, 3, True, None),
    (row((3, 0.1), (10, 0.9)), 0.5, 0.85, None, False, "not a digit: probability 0.900"),
    (row((3, 0.4), (10, 0.4), (4, 0.2)), 0.5, 0.2, 3, True, None),       # a digit still wins ties
])
def test_read_probs(probs, review_below, not_digit_above, digit, review, error):
    line = result_line(JOB, 0, "x.png", "m")
    read_probs(line, probs, review_below, not_digit_above)
    assert (line["digit"], line["review"], line["error"]) == (digit, review, error)
    assert (line["confidence"] is None) == (digit is None)


def test_the_jobs_threshold_wins_over_the_models(mnist):
    item = Item(0, "a.png", data=png(255 - mnist.test_images[0]))
    clf = StubClassifier()  # 0.75 for its digit; its own threshold is 0.5
    assert classify_chunk(Chunk(JOB, 0, (item,)), clf, Limits())[0]["review"] is False
    assert classify_chunk(Chunk(JOB, 0, (item,), review_below=0.8), clf, Limits())[0]["review"]
