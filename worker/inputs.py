"""Job inputs -> items: files, folders (recursive), globs, .zip and .tar(.gz) archives,
locally or as fsspec URLs (s3://, gs://, http(s)://, file://; worker/storage.py).

Every file found becomes exactly one item, so every file gets exactly one result line.
Archive members are read in memory, never extracted, so ``../`` names cannot escape;
a member bigger than the byte cap is refused from its header (zip bombs included).
Inside folders and archives, clutter (hidden files, ``__MACOSX/``) and files that the
include/exclude patterns leave out are skipped, and counted in ``Skipped``.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from digitscan.errors import (
    CorruptArchive,
    EmptyArchive,
    ImageError,
    InputError,
    UnreadableImage,
)
from digitscan.files import NOT_REGULAR, OPEN_FLAGS, read_fd, refused, too_large
from digitscan.worker import storage

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Entry:
    """One file found from the inputs; an archive yields many items."""

    # The file's path (an object's, for a URL), as a string: a client lists every file of a
    # job twice, and a Path object for each cost a third of that listing.
    where: str
    source: str  # the path as the user gave it (joined under a given folder), or the URL
    url: str | None = None  # set for an object read through fsspec
    size: int | None = None  # an object's size as listed

    @property
    def path(self) -> Path | PurePosixPath:
        return PurePosixPath(self.where) if self.url else Path(self.where)

    @property
    def kind(self) -> str:
        # The whole path's ending is its file name's (the suffixes hold no "/"): no basename.
        name = self.where.lower()
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


@dataclass(frozen=True)
class Selection:
    """Which files inside folders, archives and URL prefixes a job takes (``--include`` /
    ``--exclude``). A pattern without ``/`` matches a file's name, one with ``/`` its path
    below the input given (``rejects/*``); case is ignored (scanners write ``.PNG``).
    A file named on the command line is always taken."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def wants(self, relative: str) -> bool:
        if not (self.include or self.exclude):
            return True
        relative = relative.lower()
        name = relative.rsplit("/", 1)[-1]

        def hit(pattern: str) -> bool:
            return fnmatch.fnmatchcase(relative if "/" in pattern else name, pattern.lower())

        if self.include and not any(hit(p) for p in self.include):
            return False
        return not any(hit(p) for p in self.exclude)


EVERYTHING = Selection()


@dataclass
class Skipped:
    """Files left out of a job, counted by reason with a first example: the summary names
    them, and memory stays flat however many there are."""

    hidden: int = 0
    unselected: int = 0
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, name: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        self.examples.setdefault(reason, name)

    def __len__(self) -> int:
        return self.hidden + self.unselected

    def note(self) -> str:
        """'; skipped ...' for a summary line, or '' when nothing was skipped."""
        parts = []
        if self.hidden:
            parts.append(f"{self.hidden:,} hidden files (dot-files, __MACOSX/), e.g. "
                         f"{self.examples['hidden']}; name a file to take it anyway")
        if self.unselected:
            parts.append(f"{self.unselected:,} files left out by --include/--exclude, e.g. "
                         f"{self.examples['unselected']}")
        return "; skipped " + "; and ".join(parts) if parts else ""


def _sort_out(name: str, relative: str, select: Selection, skipped: Skipped | None) -> bool:
    """Whether a file found inside an input is taken; if not, count why."""
    reason = "hidden" if is_clutter(relative) else None if select.wants(relative) else "unselected"
    if reason and skipped is not None:
        skipped.add(reason, name)
    return reason is None


def check_inputs(inputs: list[str]) -> None:
    """Refuse inputs that do not exist (or patterns that match nothing), without listing
    folders: an early one-line error, before Redis or workers are involved."""
    missing = []
    for given in inputs:
        if storage.is_url(given):
            if not storage.exists(given):
                missing.append(given)
            continue
        if Path(given).exists():
            continue
        if glob.has_magic(given):
            if next(glob.iglob(given, recursive=True), None) is None:
                missing.append(f"{given} (the pattern matches nothing)")
        else:
            missing.append(given)
    if missing:
        raise InputError(f"input not found: {', '.join(missing)}. Give files, folders, globs, "
                         ".zip/.tar archives or URLs; nothing was submitted.")


def is_clutter(name: str) -> bool:
    """Files nobody means to scan: hidden files and folders (``.DS_Store``, ``.git``) and
    the ``__MACOSX`` folder macOS adds to zips. Skipped inside folders and archives (a file
    named on the command line is always taken)."""
    return any((part.startswith(".") and part not in (".", "..")) or part == "__MACOSX"
               for part in name.split("/"))


def iter_entries(inputs: list[str], skipped: Skipped | None = None,
                 select: Selection = EVERYTHING) -> Iterator[Entry]:
    """Expand inputs lazily, in the order given; folders recursively, in the order of their
    sorted paths. Memory stays that of the largest single folder, at any job size, and
    listing twice gives the same order. Clutter (``is_clutter``) and files ``select`` does
    not want are left out, and counted in ``skipped`` when given."""
    check_inputs(inputs)
    for given in inputs:
        if storage.is_url(given):
            yield from _objects(given, skipped, select)
            continue
        path = Path(given)
        if path.is_dir():
            yield from _walk(str(path), "", skipped, select)
        elif path.exists():
            yield Entry(str(path), given)
        else:
            for match in sorted(glob.glob(given, recursive=True)):
                if Path(match).is_dir():
                    yield from _walk(str(Path(match)), "", skipped, select)
                elif _sort_out(match, Path(match).name, select, skipped):
                    yield Entry(str(Path(match)), match)


def _walk(folder: str, below: str, skipped: Skipped | None, select: Selection) -> Iterator[Entry]:
    # Name by name, folders expanded in place: the order of sorted(folder.rglob("*")).
    # scandir's entries know their type from the directory listing itself: no stat() per
    # file (which was a third of a scanning client's time on 30,000 small PNGs).
    try:
        with os.scandir(folder) as listing:
            children = sorted(listing, key=lambda e: e.name)
    except OSError:
        return
    for entry in children:
        name = entry.name
        # entry.path is folder + "/" + name, joined in C; the folders above were not clutter
        # (or the walk would not be here), so a name that is not is a path that is not. A
        # listed name is one part, never "." or "..": is_clutter's test, inline (a call per
        # file, twice per job, was a tenth of the listing).
        if name[0] == "." or name == "__MACOSX":
            if skipped is not None:
                skipped.add("hidden", entry.path)
        elif _is(entry.is_dir):
            yield from _walk(entry.path, f"{below}{name}/", skipped, select)
        elif _is(entry.is_file):  # never a FIFO, socket or device: reading one could hang
            if select.wants(f"{below}{name}"):
                yield Entry(entry.path, entry.path)
            elif skipped is not None:
                skipped.add("unselected", entry.path)


def _is(test) -> bool:
    """A DirEntry type test that, like Path's, says False where the entry cannot be
    examined (a link into a folder we may not read, a file removed meanwhile)."""
    try:
        return test()
    except OSError:
        return False


def _objects(url: str, skipped: Skipped | None, select: Selection) -> Iterator[Entry]:
    """The objects at or below a URL. One object named by its URL is always taken."""
    prefix = url.rstrip("/") + "/"
    for found, size in storage.listing(url):
        name = PurePosixPath(found.partition("://")[2])
        if found.rstrip("/") == url.rstrip("/"):
            yield Entry(str(name), found, url=found, size=size)
            continue
        relative = found[len(prefix):] if found.startswith(prefix) else name.name
        if _sort_out(found, relative, select, skipped):
            yield Entry(str(name), found, url=found, size=size)


def find_entries(inputs: list[str]) -> list[Entry]:
    """``iter_entries`` as a list (small inputs, tests)."""
    return list(iter_entries(inputs))


def _zip_members(zf: zipfile.ZipFile, entry: Entry, select: Selection,
                 skipped: Skipped | None = None) -> list[zipfile.ZipInfo]:
    return [m for m in zf.infolist() if not m.is_dir()
            and _sort_out(f"{entry.source}:{m.filename}", m.filename, select, skipped)]


def _tar_members(tf: tarfile.TarFile, entry: Entry, select: Selection,
                 skipped: Skipped | None = None) -> list[tarfile.TarInfo]:
    # Regular files only: links and devices never point the worker at other files.
    return [m for m in tf.getmembers() if m.isfile()
            and _sort_out(f"{entry.source}:{m.name}", m.name, select, skipped)]


@contextlib.contextmanager
def _opened(entry: Entry) -> Iterator:
    """The archive's bytes as a seekable file: on disk, or through fsspec."""
    with (storage.open_binary(entry.url) if entry.url else open(entry.where, "rb")) as f:
        yield f


def count_items(entry: Entry, skipped: Skipped | None = None, select: Selection = EVERYTHING) -> int:
    """How many items ``read_items`` yields for ``entry``; what an archive leaves out is
    counted in ``skipped``."""
    kind = entry.kind
    if kind == "file":
        return 1
    try:
        if kind == "zip":
            with _opened(entry) as f, zipfile.ZipFile(f) as zf:
                return len(_zip_members(zf, entry, select, skipped)) or 1
        if kind == "tar":
            with _opened(entry) as f, tarfile.open(fileobj=f, mode="r:*") as tf:
                return len(_tar_members(tf, entry, select, skipped)) or 1
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError):
        pass  # a broken archive is one item: its error result
    return 1


def read_items(entry: Entry, max_bytes: int, by_reference: bool = False,
               select: Selection = EVERYTHING, reference_above: int | None = None
               ) -> Iterator[Found]:
    """Yield exactly ``count_items(entry, select=select)`` items for one entry. A local
    file over ``reference_above`` bytes is located, not read (``SubmitOptions``)."""
    if entry.kind == "file":
        yield _read_object(entry, max_bytes, by_reference) if entry.url else \
            _read_file(entry, max_bytes, by_reference, reference_above)
        return
    reader = _read_zip if entry.kind == "zip" else _read_tar
    try:
        yield from reader(entry, max_bytes, select)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        yield Found(entry.source, error=CorruptArchive(str(exc)))


def _read_file(entry: Entry, max_bytes: int, by_reference: bool,
               reference_above: int | None = None) -> Found:
    try:
        if by_reference or reference_above == 0:
            # Located, not read: one stat, not an open, an fstat and a close (with scan's many
            # workers every file goes by path: 13 % of the client's time, whose one process
            # is what such a scan waits for). scan's empty files are read below, and named.
            st = os.stat(entry.where)
            why = refused(st, max_bytes)
            if why:
                return Found(entry.source, error=why)
            if by_reference:
                return Found(entry.source, path=os.path.realpath(entry.where), size=st.st_size)
            if st.st_size > 0:
                return Found(entry.source, path=os.path.abspath(entry.where), size=st.st_size)
        # Opened, then checked by fstat: one lookup of the path, not two (a stat, then an
        # open), ~5 us a file, 2 % of a scan of small PNGs.
        fd = os.open(entry.where, OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            why = refused(st, max_bytes)
            if why:
                return Found(entry.source, error=why)
            if reference_above is not None and st.st_size > reference_above:
                # The worker reads it: its bytes need not cross Redis, the worker's parent and
                # the pool's pipe, each of which costs by the byte (scan's REFERENCE_ABOVE).
                return Found(entry.source, path=os.path.abspath(entry.where), size=st.st_size)
            data = read_fd(fd, st.st_size, max_bytes)
        finally:
            os.close(fd)
        if len(data) > max_bytes:
            return Found(entry.source, error=too_large(len(data), max_bytes))
        return Found(entry.source, data=data)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket cannot be opened at all
            return Found(entry.source, error=UnreadableImage(NOT_REGULAR))
        return Found(entry.source, error=UnreadableImage(exc.strerror or str(exc)))


def _read_object(entry: Entry, max_bytes: int, by_reference: bool) -> Found:
    if entry.size is not None and entry.size > max_bytes:
        return Found(entry.source, error=too_large(entry.size, max_bytes))
    if by_reference:  # the workers read it from the storage themselves
        return Found(entry.source, path=entry.url, size=entry.size)
    try:
        return Found(entry.source, data=storage.read(entry.url, max_bytes, size=entry.size))
    except ImageError as exc:
        return Found(entry.source, error=exc)


def _read_zip(entry: Entry, max_bytes: int, select: Selection) -> Iterator[Found]:
    with _opened(entry) as f, zipfile.ZipFile(f) as zf:
        members = _zip_members(zf, entry, select)
        if not members:
            yield Found(entry.source, error=EmptyArchive("no files inside"))
        for m in members:
            source = f"{entry.source}:{m.filename}"
            if m.file_size > max_bytes:
                yield Found(source, error=too_large(m.file_size, max_bytes))
                continue
            try:
                with zf.open(m) as f:
                    data = f.read(max_bytes + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                yield Found(source, error=CorruptArchive(f"member: {exc}"))
                continue
            if len(data) > max_bytes:  # the header lied about the size
                yield Found(source, error=too_large(len(data), max_bytes))
            else:
                yield Found(source, data=data)


def _read_tar(entry: Entry, max_bytes: int, select: Selection) -> Iterator[Found]:
    with _opened(entry) as f, tarfile.open(fileobj=f, mode="r:*") as tf:
        members = _tar_members(tf, entry, select)
        if not members:
            yield Found(entry.source, error=EmptyArchive("no files inside"))
        for m in members:
            source = f"{entry.source}:{m.name}"
            if m.size > max_bytes:
                yield Found(source, error=too_large(m.size, max_bytes))
                continue
            try:
                f = tf.extractfile(m)
                data = f.read() if f else b""
            except (tarfile.TarError, OSError, EOFError) as exc:
                yield Found(source, error=CorruptArchive(f"member: {exc}"))
                continue
            yield Found(source, data=data)


class SourceReader:
    """The bytes of a result's ``source``, read again after the job (a report's thumbnails):
    a file, an archive member (``batch.zip:cells/7.png``), or a URL, or a member of an
    archive at a URL. None when it is gone or was never a file (images submitted from
    memory). The last archive opened stays open: thumbnails come in input order."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._archive: tuple[str, object, object] | None = None  # (source, file, zip/tar)

    def read(self, source: str) -> bytes | None:
        try:
            split = self._split(source)
            if split is None:
                return self._whole(source)
            return self._member(*split)
        except (OSError, ImageError, InputError, zipfile.BadZipFile, tarfile.TarError, KeyError,
                EOFError, ValueError):
            return None

    def _whole(self, source: str) -> bytes | None:
        if storage.is_url(source):
            return storage.read(source, self.max_bytes)
        path = Path(source)
        if not path.is_file() or path.stat().st_size > self.max_bytes:
            return None
        return path.read_bytes()

    @staticmethod
    def _split(source: str) -> tuple[str, str] | None:
        """(archive, member) when ``source`` names an archive member."""
        start = source.find("://") + 3 if storage.is_url(source) else 0
        at = source.find(":", start)
        while at != -1:
            left = source[:at]
            if left.lower().endswith(ZIP_SUFFIXES + TAR_SUFFIXES):
                return left, source[at + 1:]
            at = source.find(":", at + 1)
        return None

    def _member(self, archive: str, member: str) -> bytes | None:
        if self._archive is None or self._archive[0] != archive:
            self.close()
            f = storage.open_binary(archive) if storage.is_url(archive) else open(archive, "rb")
            is_zip = archive.lower().endswith(ZIP_SUFFIXES)
            opened = zipfile.ZipFile(f) if is_zip else tarfile.open(fileobj=f, mode="r:*")
            self._archive = (archive, f, opened)
        opened = self._archive[2]
        if isinstance(opened, zipfile.ZipFile):
            info = opened.getinfo(member)
            return None if info.file_size > self.max_bytes else opened.read(info)
        info = opened.getmember(member)
        f = opened.extractfile(info) if info.isfile() and info.size <= self.max_bytes else None
        return f.read() if f else None

    def close(self) -> None:
        if self._archive is not None:
            self._archive[2].close()
            self._archive[1].close()
            self._archive = None
