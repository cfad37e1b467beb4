"""Job inputs -> items: files, folders (recursive), globs, .zip and .tar(.gz) archives.

Every file found becomes exactly one item, so every file gets exactly one result line.
Archive members are read in memory, never extracted, so ``../`` names cannot escape;
a member bigger than the byte cap is refused from its header (zip bombs included).
"""

from __future__ import annotations

import glob
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from digitscan.errors import (
    CorruptArchive,
    EmptyArchive,
    ImageError,
    ImageTooLarge,
    InputError,
    UnreadableImage,
)

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Entry:
    """One file found from the inputs; an archive yields many items."""

    path: Path
    source: str  # the path as the user gave it (joined under a given folder)

    @property
    def kind(self) -> str:
        name = self.path.name.lower()
        if name.endswith(ZIP_SUFFIXES):
            return "zip"
        if name.endswith(TAR_SUFFIXES):
            return "tar"
        return "file"


@dataclass(frozen=True)
class Found:
    """One item as read: bytes inline, or a path for --by-reference, or an error."""

    source: str
    data: bytes | None = None
    path: str | None = None
    size: int | None = None  # of the file at ``path``
    error: ImageError | None = None


def check_inputs(inputs: list[str]) -> None:
    """Refuse inputs that do not exist (or patterns that match nothing), without listing
    folders: an early one-line error, before Redis or workers are involved."""
    missing = []
    for given in inputs:
        if Path(given).exists():
            continue
        if glob.has_magic(given):
            if next(glob.iglob(given, recursive=True), None) is None:
                missing.append(f"{given} (the pattern matches nothing)")
        else:
            missing.append(given)
    if missing:
        raise InputError(f"input not found: {', '.join(missing)}. Give files, folders, globs or "
                         ".zip/.tar archives; nothing was submitted.")


def is_clutter(name: str) -> bool:
    """Files nobody means to scan: hidden files and folders (``.DS_Store``, ``.git``) and
    the ``__MACOSX`` folder macOS adds to zips. Skipped inside folders and archives (a file
    named on the command line is always taken)."""
    return any((part.startswith(".") and part not in (".", "..")) or part == "__MACOSX"
               for part in name.split("/"))


def iter_entries(inputs: list[str], skipped: list[str] | None = None) -> Iterator[Entry]:
    """Expand inputs lazily, in the order given; folders recursively, in the order of their
    sorted paths. Memory stays that of the largest single folder, at any job size, and
    listing twice gives the same order. Clutter (``is_clutter``) is left out, and named in
    ``skipped`` when given."""
    check_inputs(inputs)
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            yield from _walk(path, skipped)
        elif path.exists():
            yield Entry(path, given)
        else:
            for match in sorted(glob.glob(given, recursive=True)):
                yield from iter_entries([match], skipped)


def _walk(folder: Path, skipped: list[str] | None) -> Iterator[Entry]:
    # Name by name, folders expanded in place: the order of sorted(folder.rglob("*")).
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return
    for name in names:
        child = folder / name
        if is_clutter(name):
            if skipped is not None:
                skipped.append(str(child))
        elif child.is_dir():
            yield from _walk(child, skipped)
        elif child.is_file():  # never a FIFO, socket or device: reading one could hang
            yield Entry(child, str(child))


def find_entries(inputs: list[str]) -> list[Entry]:
    """``iter_entries`` as a list (small inputs, tests)."""
    return list(iter_entries(inputs))


def _zip_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [m for m in zf.infolist() if not m.is_dir() and not is_clutter(m.filename)]


def _tar_members(tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    # Regular files only: links and devices never point the worker at other files.
    return [m for m in tf.getmembers() if m.isfile() and not is_clutter(m.name)]


def count_items(entry: Entry, skipped: list[str] | None = None) -> int:
    """How many items ``read_items`` yields for ``entry``; archive clutter goes to ``skipped``."""
    try:
        if entry.kind == "zip":
            with zipfile.ZipFile(entry.path) as zf:
                if skipped is not None:
                    skipped.extend(f"{entry.source}:{m.filename}" for m in zf.infolist()
                                   if not m.is_dir() and is_clutter(m.filename))
                return len(_zip_members(zf)) or 1
        if entry.kind == "tar":
            with tarfile.open(entry.path, "r:*") as tf:
                if skipped is not None:
                    skipped.extend(f"{entry.source}:{m.name}" for m in tf.getmembers()
                                   if m.isfile() and is_clutter(m.name))
                return len(_tar_members(tf)) or 1
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError):
        pass  # a broken archive is one item: its error result
    return 1


def read_items(entry: Entry, max_bytes: int, by_reference: bool = False) -> Iterator[Found]:
    """Yield exactly ``count_items(entry)`` items for one entry."""
    if entry.kind == "file":
        yield _read_file(entry, max_bytes, by_reference)
        return
    reader = _read_zip if entry.kind == "zip" else _read_tar
    try:
        yield from reader(entry, max_bytes)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        yield Found(entry.source, error=CorruptArchive(str(exc)))


def _too_large(size: int, max_bytes: int) -> ImageTooLarge:
    return ImageTooLarge(f"{size} bytes; the limit is {max_bytes}")


def _read_file(entry: Entry, max_bytes: int, by_reference: bool) -> Found:
    try:
        st = entry.path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read for ever
            return Found(entry.source, error=UnreadableImage(
                "not a regular file (a FIFO, socket or device); give image files"))
        size = st.st_size
        if size > max_bytes:
            return Found(entry.source, error=_too_large(size, max_bytes))
        if by_reference:
            return Found(entry.source, path=str(entry.path.resolve()), size=size)
        return Found(entry.source, data=entry.path.read_bytes())
    except OSError as exc:
        return Found(entry.source, error=UnreadableImage(exc.strerror or str(exc)))


def _read_zip(entry: Entry, max_bytes: int) -> Iterator[Found]:
    with zipfile.ZipFile(entry.path) as zf:
        members = _zip_members(zf)
        if not members:
            yield Found(entry.source, error=EmptyArchive("no files inside"))
        for m in members:
            source = f"{entry.source}:{m.filename}"
            if m.file_size > max_bytes:
                yield Found(source, error=_too_large(m.file_size, max_bytes))
                continue
            try:
                with zf.open(m) as f:
                    data = f.read(max_bytes + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                yield Found(source, error=CorruptArchive(f"member: {exc}"))
                continue
            if len(data) > max_bytes:  # the header lied about the size
                yield Found(source, error=_too_large(len(data), max_bytes))
            else:
                yield Found(source, data=data)


def _read_tar(entry: Entry, max_bytes: int) -> Iterator[Found]:
    with tarfile.open(entry.path, "r:*") as tf:
        members = _tar_members(tf)
        if not members:
            yield Found(entry.source, error=EmptyArchive("no files inside"))
        for m in members:
            source = f"{entry.source}:{m.name}"
            if m.size > max_bytes:
                yield Found(source, error=_too_large(m.size, max_bytes))
                continue
            try:
                f = tf.extractfile(m)
                data = f.read() if f else b""
            except (tarfile.TarError, OSError, EOFError) as exc:
                yield Found(source, error=CorruptArchive(f"member: {exc}"))
                continue
            yield Found(source, data=data)
