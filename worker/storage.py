"""Inputs where users keep them: object storage and web servers, through fsspec.

``s3://``, ``gs://``, ``http(s)://`` and ``file://`` URLs are listed, sized and read with
fsspec's filesystems (s3fs, gcsfs, its HTTP filesystem), from the ``storage`` extra.
Endpoints and keys come from each library's standard settings: for S3, botocore's
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``...;
nothing here reads them.

Failures are sorted the way the rest of digitscan sorts them: an object that is not there
is that image's error; storage that cannot be reached at all (no endpoint, no
credentials, no extra installed) is ``StorageUnreachable``, said in one line.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from typing import IO

from digitscan.errors import ChangedSinceSubmission, ImageTooLarge, StorageUnreachable, UnreadableImage

EXTRA_HINT = "pip install 'digitscan[storage]'"


def is_url(given: str) -> bool:
    """A URL fsspec should open (``scheme://``), not a local path."""
    scheme, sep, _ = given.partition("://")
    return bool(sep) and scheme.replace("+", "").replace("-", "").isalnum()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for ``url``; one line if it cannot be had."""
    try:
        import fsspec
    except ImportError:
        raise StorageUnreachable(f"{url}: reading URLs needs fsspec: {EXTRA_HINT}.") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # fsspec names the missing backend ("Install s3fs to access S3")
        raise StorageUnreachable(f"{url}: {exc}; {EXTRA_HINT}.") from None
    except ValueError as exc:  # "Protocol not known: foo"
        raise StorageUnreachable(f"{url}: {exc}. Give a local path or an s3://, gs://, "
                                 "http(s):// or file:// URL.") from None


def _call(url: str, operation):
    """Run one storage operation; anything but a missing object is StorageUnreachable."""
    try:
        return operation()
    except (FileNotFoundError, StorageUnreachable):
        raise
    except Exception as exc:  # botocore, aiohttp and gcsfs raise many types of their own
        raise StorageUnreachable(f"cannot read {url} ({_reason(exc)}); check the endpoint and "
                                 "credentials (for S3: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                                 "AWS_SECRET_ACCESS_KEY).") from None


def exists(url: str) -> bool:
    """Whether ``url`` names an object or a folder, or (a pattern) matches anything."""
    fs, path = filesystem(url)
    if glob.has_magic(path):
        return bool(_call(url, lambda: fs.glob(path)))
    return bool(_call(url, lambda: fs.exists(path)))


def listing(url: str) -> Iterator[tuple[str, int | None]]:
    """(URL, size) of every object under ``url``: itself if it is one object, everything
    below it if it is a folder (prefix), every match if it is a pattern; sorted by name."""
    fs, path = filesystem(url)

    def expand():
        if glob.has_magic(path):
            return {p: fs.info(p) for p in fs.glob(path)}
        if fs.isdir(path):
            return fs.find(path, detail=True)
        return {path: fs.info(path)}

    found = _call(url, expand)
    for name in sorted(found):
        info = found[name]
        if info.get("type") == "directory":
            yield from listing(fs.unstrip_protocol(name))
        else:
            yield fs.unstrip_protocol(name), info.get("size")


def open_binary(url: str) -> IO[bytes]:
    """A seekable binary file for ``url`` (archives are read member by member from it)."""
    fs, path = filesystem(url)
    return _call(url, lambda: fs.open(path, "rb"))


def read(url: str, max_bytes: int, expected_size: int | None = None,
         size: int | None = None) -> bytes:
    """The bytes of one object, refusing an oversized one from its size first (``size``,
    when the listing gave it, saves asking the storage again).

    A missing object is ``UnreadableImage``; unreachable storage is ``StorageUnreachable``."""
    fs, path = filesystem(url)
    try:
        if size is None:
            size = _call(url, lambda: fs.size(path))
        if size is not None and size > max_bytes:
            raise ImageTooLarge(f"{size} bytes; the limit is {max_bytes}")
        if expected_size is not None and size is not None and size != expected_size:
            raise ChangedSinceSubmission(f"{size} bytes now, {expected_size} when submitted")
        data = _call(url, lambda: fs.cat_file(path))
    except FileNotFoundError:
        raise UnreadableImage(f"no such object: {url}") from None
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes; the limit is {max_bytes}")
    return data
