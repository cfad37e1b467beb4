"""The job message: one chunk of images, sent as msgpack, validated before any work.

    {"v": 1, "job": "<32 hex>", "chunk": 0, "review_below": 0.9,
     "items": [{"i": 0, "source": "scans/a.png", "data": b"<the file's bytes>"},
               {"i": 1, "source": "/shared/b.png", "path": "/shared/b.png", "size": 812}]}

``data`` carries the file inline (the default): bytes, or in a JSON message (as clients of
the version before sent them) a base64 string; ``path`` is used with --by-reference
when every worker sees the same storage, with the file's ``size`` at submission (optional)
so a worker can tell a file that changed since. ``i`` is the item's index in the job.
``review_below`` (optional) is the job's review threshold; without it the worker uses
its own setting or its model card's.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import msgpack

from digitscan.errors import MalformedMessage

VERSION = 1
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# What Celery calls the serializer of ``pack`` and ``unpack`` (worker/celeryconfig.py).
SERIALIZER = "digitscan-msgpack"
CONTENT_TYPE = "application/x-digitscan-msgpack"


def pack(message: object) -> bytes:
    """msgpack, images as bin. A file name need not be UTF-8 (POSIX allows any bytes but
    "/" and NUL; Python holds the others as surrogate escapes): such a name travels as the
    bytes it is and comes back as the same string, as JSON's escapes carried it before.
    Plain msgpack (kombu's "msgpack") refuses it."""
    return msgpack.packb(message, use_bin_type=True, unicode_errors="surrogateescape")


def unpack(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")


def task_id(job: str, chunk: int) -> str:
    # Deterministic: a chunk sent twice is the same task, and its results overwrite.
    return f"{job}:{chunk}"


@dataclass(frozen=True)
class Item:
    index: int
    source: str
    data: bytes | None = None
    path: str | None = None
    size: int | None = None  # of the file at ``path``, when it was submitted

    def to_message(self) -> dict:
        out: dict = {"i": self.index, "source": self.source}
        if self.path is not None:
            out["path"] = self.path
            if self.size is not None:
                out["size"] = self.size
        else:
            out["data"] = self.data or b""
        return out


@dataclass(frozen=True)
class Chunk:
    job: str
    chunk: int
    items: tuple[Item, ...]
    review_below: float | None = None

    @property
    def task_id(self) -> str:
        return task_id(self.job, self.chunk)

    def to_message(self) -> dict:
        out = {"v": VERSION, "job": self.job, "chunk": self.chunk,
               "items": [item.to_message() for item in self.items]}
        if self.review_below is not None:
            out["review_below"] = self.review_below
        return out

    @classmethod
    def from_message(cls, message: object) -> Chunk:
        if not isinstance(message, dict):
            raise MalformedMessage(f"message is a {type(message).__name__}, expected an object")
        if message.get("v") != VERSION:
            raise MalformedMessage(f"message version {message.get('v')!r}, expected {VERSION}")
        job, chunk, items = message.get("job"), message.get("chunk"), message.get("items")
        if not isinstance(job, str) or not JOB_ID.match(job):
            raise MalformedMessage(f"job id {job!r} is not 32 hex digits")
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0:
            raise MalformedMessage(f"chunk {chunk!r} is not a non-negative integer")
        if not isinstance(items, list) or not items:
            raise MalformedMessage("items must be a non-empty list")
        review = message.get("review_below")
        if review is not None and (isinstance(review, bool) or not isinstance(review, (int, float))
                                   or not 0 <= review <= 1):
            raise MalformedMessage(f"review_below {review!r} is not a probability")
        return cls(job=job, chunk=chunk, items=tuple(_item(raw) for raw in items),
                   review_below=None if review is None else float(review))


def _item(raw: object) -> Item:
    if not isinstance(raw, dict):
        raise MalformedMessage(f"item {raw!r:.40} is not an object")
    index, source = raw.get("i"), raw.get("source")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise MalformedMessage(f"item index {index!r} is not a non-negative integer")
    if not isinstance(source, str):
        raise MalformedMessage(f"item {index}: source must be a string")
    if ("data" in raw) == ("path" in raw):
        raise MalformedMessage(f"item {index}: needs exactly one of data and path")
    if "path" in raw:
        if not isinstance(raw["path"], str):
            raise MalformedMessage(f"item {index}: path must be a string")
        size = raw.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise MalformedMessage(f"item {index}: size {size!r} is not a byte count")
        return Item(index, source, path=raw["path"], size=size)
    data = raw["data"]
    if isinstance(data, str):  # a JSON message
        try:
            data = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise MalformedMessage(f"item {index}: data is not base64") from None
    elif not isinstance(data, bytes):
        raise MalformedMessage(f"item {index}: data must be bytes (or base64 in JSON), "
                               f"not {type(data).__name__}")
    return Item(index, source, data=data)
