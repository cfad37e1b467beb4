"""Reading input files safely (the client and the workers), and writing files so that a
reader never sees half of one."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from digitscan.errors import ConfigError, ImageError, ImageTooLarge, UnreadableImage

NOT_REGULAR = "not a regular file (a FIFO, socket or device); give image files"
# Opened without blocking (the open of a FIFO would wait for a writer for ever), no
# controlling terminal from a tty, not inherited by children.
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def too_large(size: int, max_bytes: int) -> ImageTooLarge:
    return ImageTooLarge(f"{size} bytes; the limit is {max_bytes}")


def refused(st: os.stat_result, max_bytes: int) -> ImageError | None:
    """Why an input file with this stat is not read (not a regular file, too large), or None."""
    if not stat.S_ISREG(st.st_mode):
        return UnreadableImage(NOT_REGULAR)
    return too_large(st.st_size, max_bytes) if st.st_size > max_bytes else None


def read_fd(fd: int, size: int, max_bytes: int) -> bytes:
    """An open file's bytes, read to the end also if it grew since its fstat said ``size``,
    but never much past ``max_bytes``: longer than that means too large."""
    parts, total = [], 0
    while total <= max_bytes:
        part = os.read(fd, max(size + 1 - total, 1 << 16))
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)  # one part: that part, not a copy



def writable_folder(path: str | Path, what: str) -> Path:
    """Create ``path`` (and its parents) now, or say in one line why it cannot be: before
    any work is done, so nothing computed is lost to an unwritable output."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {path}: a file is in the way, not a folder; choose another "
                          "path.") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot create the folder ({exc.strerror or exc}); "
                          "choose a writable path.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: the folder is not writable; choose a writable path.")
    return path


def part_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".part")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield ``PATH.part`` to write; move it onto ``path`` only if the block succeeds.

    A crash or an exception mid-write leaves the previous ``path`` untouched and no
    ``.part`` behind (rename is atomic on one filesystem)."""
    path = Path(path)
    part = part_path(path)
    try:
        yield part
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
