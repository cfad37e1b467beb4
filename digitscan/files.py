"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


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
