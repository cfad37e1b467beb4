import base64
import os

import msgpack
import pytest

from digitscan.worker.messages import Chunk, Item, MalformedMessage, pack, unpack

JOB = "0123456789abcdef0123456789abcdef"


def test_round_trip_inline_and_by_reference():
    chunk = Chunk(JOB, 3, (Item(0, "a.png", data=b"\x89PNG"), Item(1, "/s/b.png", path="/s/b.png")))
    assert Chunk.from_message(chunk.to_message()) == chunk
    # As the worker gets it: through msgpack, the images as bytes (no base64 anywhere).
    assert Chunk.from_message(unpack(pack(chunk.to_message()))) == chunk
    assert chunk.to_message()["items"][0]["data"] == b"\x89PNG"
    assert chunk.task_id == f"{JOB}:3"
    with_threshold = Chunk(JOB, 4, chunk.items, review_below=0.9)
    assert Chunk.from_message(with_threshold.to_message()) == with_threshold
    assert "review_below" not in chunk.to_message()  # absent: the worker's own threshold


def test_a_file_name_that_is_not_utf8_travels_as_it_is():
    """POSIX file names are bytes; Python holds those that are not UTF-8 with surrogate
    escapes, which plain msgpack refuses to encode."""
    name = os.fsdecode(b"scans/caf\xe9-\xff.png")
    chunk = Chunk(JOB, 0, (Item(0, name, data=b"x"), Item(1, name, path=name)))
    with pytest.raises(UnicodeEncodeError):
        msgpack.packb(chunk.to_message())
    assert Chunk.from_message(unpack(pack(chunk.to_message()))) == chunk


@pytest.mark.parametrize(("message", "match"), [
    ("a string", "expected an object"),
    ({"v": 2, "job": JOB, "chunk": 0, "items": []}, "version 2"),
    ({"v": 1, "job": "../../etc", "chunk": 0, "items": [{}]}, "32 hex digits"),
    ({"v": 1, "job": JOB, "chunk": -1, "items": [{}]}, "non-negative"),
    ({"v": 1, "job": JOB, "chunk": 0, "items": []}, "non-empty list"),
    ({"v": 1, "job": JOB, "chunk": 0, "items": [{"i": 0, "source": "x"}]}, "exactly one of"),
    ({"v": 1, "job": JOB, "chunk": 0, "items": [{"i": 0, "source": "x", "data": "@@"}]},
     "not base64"),
    ({"v": 1, "job": JOB, "chunk": 0, "items": [{"i": 0, "source": "x", "data": [1, 2]}]},
     "data must be bytes"),
    ({"v": 1, "job": JOB, "chunk": 0, "items": [{"i": True, "source": "x", "data": ""}]},
     "index True"),
    ({"v": 1, "job": JOB, "chunk": 0, "review_below": 1.5, "items": [{"i": 0, "source": "x", "data": ""}]},
     "review_below 1.5 is not a probability"),
    ({"v": 1, "job": JOB, "chunk": 0, "review_below": "high", "items": [{"i": 0, "source": "x", "data": ""}]},
     "review_below 'high'"),
])
def test_malformed_messages_are_named(message, match):
    with pytest.raises(MalformedMessage, match=match):
        Chunk.from_message(message)


def test_a_json_message_of_the_version_before_is_read():
    """Clients before msgpack sent JSON with the images in base64."""
    msg = {"v": 1, "job": JOB, "chunk": 0,
           "items": [{"i": 5, "source": "x", "data": base64.b64encode(b"abc").decode()}]}
    assert Chunk.from_message(msg).items[0] == Item(5, "x", data=b"abc")
