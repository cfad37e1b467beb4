import io
import os
import tarfile
import zipfile

import pytest

from digitscan.errors import InputError
from digitscan.worker.inputs import Selection, Skipped, count_items, find_entries, iter_entries, read_items


def items(inputs, max_bytes=1 << 20, by_reference=False):
    out = []
    for entry in find_entries(inputs):
        found = list(read_items(entry, max_bytes, by_reference))
        assert len(found) == count_items(entry)
        out.extend(found)
    return out


def test_folders_recurse_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.png").write_bytes(b"2")
    (tmp_path / "a.png").write_bytes(b"1")
    got = items([str(tmp_path)])
    assert [f.source for f in got] == [str(tmp_path / "a.png"), str(tmp_path / "b" / "2.png")]
    assert [f.data for f in got] == [b"1", b"2"]


def test_globs_and_by_reference(tmp_path):
    for name in ("x1.png", "x2.png", "y.png"):
        (tmp_path / name).write_bytes(b"d")
    got = items([str(tmp_path / "x*.png")], by_reference=True)
    assert [f.path for f in got] == [str(tmp_path / "x1.png"), str(tmp_path / "x2.png")]
    assert all(f.data is None for f in got)


def test_missing_inputs_are_all_named_and_nothing_is_read(tmp_path):
    with pytest.raises(InputError, match="nope.png, .*zzz\\*.png \\(the pattern matches nothing\\)"):
        find_entries([str(tmp_path / "nope.png"), str(tmp_path / "zzz*.png")])


def test_zip_members_become_items_and_traversal_names_stay_names(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("d/1.png", b"one")
        zf.writestr("../../escape.png", b"two")
        zf.writestr("empty/", b"")
    got = items([str(path)])
    assert [(f.source, f.data) for f in got] == [(f"{path}:d/1.png", b"one"),
                                                 (f"{path}:../../escape.png", b"two")]
    assert not (tmp_path.parent / "escape.png").exists()


def test_zip_bomb_member_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", b"\0" * (5 << 20))
        zf.writestr("ok.png", b"fine")
    assert path.stat().st_size < 50_000
    got = items([str(path)], max_bytes=1 << 20)
    assert str(got[0].error).startswith("image too large: 5242880 bytes") and got[1].data == b"fine"


def test_tar_gz_regular_files_only(tmp_path):
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("x/1.png")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("x/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    got = items([str(path)])
    assert [(f.source, f.data) for f in got] == [(f"{path}:x/1.png", b"abc")]


def test_corrupt_archive_is_one_error_item(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b not gzip")
    got = items([str(tmp_path / "bad.zip"), str(tmp_path / "bad.tar.gz")])
    assert len(got) == 2 and all(str(f.error).startswith("corrupt archive") for f in got)


def test_files_over_reference_above_are_located_and_the_rest_read(tmp_path, monkeypatch):
    """scan's own workers read large local files themselves: the client sends their absolute
    path and size (a relative input too: the workers need not share its working folder);
    refused files stay errors, whichever way they would have gone."""
    (tmp_path / "small.png").write_bytes(b"s" * 100)
    (tmp_path / "large.png").write_bytes(b"l" * 101)
    (tmp_path / "huge.png").write_bytes(b"h" * 300)
    monkeypatch.chdir(tmp_path)
    got = {}
    for entry in find_entries(["large.png", "small.png", "huge.png"]):
        (got[entry.source],) = read_items(entry, 200, reference_above=100)
    assert got["small.png"].data == b"s" * 100 and got["small.png"].path is None
    assert (got["large.png"].data, got["large.png"].path, got["large.png"].size) == \
        (None, str(tmp_path / "large.png"), 101)
    assert str(got["huge.png"].error) == "image too large: 300 bytes; the limit is 200"


def test_with_a_threshold_of_zero_every_file_with_bytes_is_located(tmp_path, monkeypatch):
    """scan with many workers (reference_above 0): located by one stat; an empty file is
    still read (and named as empty later), refused files stay errors, a FIFO never hangs."""
    (tmp_path / "one.png").write_bytes(b"1")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "huge.png").write_bytes(b"h" * 300)
    os.mkfifo(tmp_path / "pipe.png")
    monkeypatch.chdir(tmp_path)
    got = {}
    for entry in find_entries(["one.png", "empty.png", "huge.png", "pipe.png"]):
        (got[entry.source],) = read_items(entry, 200, reference_above=0)
    assert (got["one.png"].data, got["one.png"].path, got["one.png"].size) == \
        (None, str(tmp_path / "one.png"), 1)
    assert got["empty.png"].data == b"" and got["empty.png"].path is None
    assert str(got["huge.png"].error) == "image too large: 300 bytes; the limit is 200"
    assert str(got["pipe.png"].error).startswith("unreadable file: not a regular file")


def test_oversized_plain_file(tmp_path):
    (tmp_path / "big.png").write_bytes(b"x" * 200)
    (got,) = items([str(tmp_path / "big.png")], max_bytes=100)
    assert str(got.error) == "image too large: 200 bytes; the limit is 100"
    (by_reference,) = items([str(tmp_path / "big.png")], max_bytes=100, by_reference=True)
    assert str(by_reference.error) == str(got.error)
    (exact,) = items([str(tmp_path / "big.png")], max_bytes=200)
    assert exact.data == b"x" * 200


def test_files_are_read_whole_whatever_their_size(tmp_path):
    """Read from one open file (fstat, then reads to the end): empty, one byte, exactly a
    read's size, and several reads' worth all come back byte for byte."""
    import os

    sizes = (0, 1, 1 << 16, (1 << 16) + 1, 5 * (1 << 16) + 7)
    for size in sizes:
        (tmp_path / f"{size}.bin").write_bytes(os.urandom(size))
    got = items([str(tmp_path / f"{size}.bin") for size in sizes], max_bytes=1 << 20)
    assert [f.data for f in got] == [(tmp_path / f"{size}.bin").read_bytes() for size in sizes]


def test_a_socket_or_device_named_as_input_is_one_error_line(tmp_path):
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        for by_reference in (False, True):
            (got,) = items([str(tmp_path / "sock")], by_reference=by_reference)
            assert str(got.error) == "unreadable file: not a regular file (a FIFO, socket or " \
                "device); give image files"
    (null,) = items(["/dev/null"])
    assert str(null.error) == str(got.error)


def test_clutter_is_skipped_and_named_and_a_fifo_never_hangs(tmp_path):
    """What a folder copied from a Mac or a repository holds besides the scans: dot-files,
    .git/, a zip's __MACOSX/ twins. Left out, and named; a FIFO is an error, not a hang."""
    import os
    import zipfile

    from digitscan.worker.inputs import iter_entries

    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_bytes(b"ref")
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("b.png", b"png")
        zf.writestr("__MACOSX/._b.png", b"resource fork")
        zf.writestr("cells/.hidden.png", b"x")
    os.mkfifo(tmp_path / "pipe")
    skipped = Skipped()
    entries = list(iter_entries([str(tmp_path)], skipped))
    assert [e.path.name for e in entries] == ["a.png", "b.zip"]  # no FIFO from a folder walk
    assert sum(count_items(e, skipped) for e in entries) == 2
    assert (skipped.hidden, skipped.unselected, len(skipped)) == (4, 0, 4)
    assert skipped.note() == f"; skipped 4 hidden files (dot-files, __MACOSX/), e.g. " \
        f"{tmp_path / '.DS_Store'}; name a file to take it anyway"
    assert [f.source.rsplit(":", 1)[-1] for f in read_items(entries[1], 100)] == ["b.png"]
    # A FIFO named on the command line: one error line, at once.
    (fifo,) = iter_entries([str(tmp_path / "pipe")])
    (found,) = read_items(fifo, 100)
    assert str(found.error) == "unreadable file: not a regular file (a FIFO, socket or device); " \
        "give image files"


def test_include_and_exclude_patterns_pick_files_in_folders_and_archives(tmp_path):
    """--include/--exclude: names (case ignored) or paths below the input; what they leave
    out is counted; a file named on the command line is always taken."""
    (tmp_path / "batch").mkdir()
    (tmp_path / "rejects").mkdir()
    for name in ("batch/a.png", "batch/B.PNG", "batch/notes.txt", "rejects/c.png", "d.jpg"):
        (tmp_path / name).write_bytes(b"x")
    with zipfile.ZipFile(tmp_path / "cells.zip", "w") as zf:
        zf.writestr("rejects/e.png", b"x")
        zf.writestr("f.png", b"x")
        zf.writestr("readme.txt", b"x")
    select = Selection(include=("*.png", "*.zip"), exclude=("rejects/*",))
    skipped = Skipped()
    entries = list(iter_entries([str(tmp_path)], skipped, select))
    assert [str(e.path.relative_to(tmp_path)) for e in entries] == [
        "batch/B.PNG", "batch/a.png", "cells.zip"]
    zipped = [f.source.rsplit(":", 1)[-1] for f in read_items(entries[-1], 100, select=select)]
    assert zipped == ["f.png"] and count_items(entries[-1], skipped, select) == 1
    # notes.txt, rejects/c.png, d.jpg; then the zip's rejects/e.png and readme.txt
    assert skipped.unselected == 5 and skipped.hidden == 0
    assert "5 files left out by --include/--exclude" in skipped.note()
    # named on the command line: taken whatever the patterns say
    (named,) = iter_entries([str(tmp_path / "batch" / "notes.txt")], Skipped(), select)
    assert named.path.name == "notes.txt"
    # a glob's matches are filtered like a folder's files
    globbed = iter_entries([str(tmp_path / "batch" / "*")], None, Selection(exclude=("*.txt",)))
    assert sorted(e.path.name for e in globbed) == ["B.PNG", "a.png"]
