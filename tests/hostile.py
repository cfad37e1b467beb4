"""A corpus of hostile and odd inputs, written on demand (nothing large is committed).

``write_corpus`` returns {file name: expected result}: a digit 0-9, or the start of the
error message (its kind).
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny IDAT: a decompression bomb
    as far as any decoder that trusts the header is concerned."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def write_corpus(folder: Path, mnist) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=True)
    seven = Image.fromarray(255 - mnist.test_images[0])  # label 7, dark on white
    two = Image.fromarray(255 - mnist.test_images[1])  # label 2
    good = _png(seven)
    expected: dict[str, object] = {}

    def put(name: str | bytes, data: bytes, expect: object) -> None:
        path = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else name.encode())
        with open(path, "wb") as f:
            f.write(data)
        expected[os.fsdecode(os.path.basename(path))] = expect

    put("good.png", good, 7)
    put("empty.png", b"", "corrupt image")
    put("truncated.png", _png(seven.resize((280, 280)))[:500], "corrupt image")
    put("text.txt", b"this is not an image\n" * 10, "unsupported format")
    put("random.bin", np.random.default_rng(0).bytes(4096), "unsupported format")
    put("drawing.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "unsupported format")
    put("bomb-40000.png", png_with_size(40000, 40000), "image too large")
    put("big-9000.png", png_with_size(9000, 9000), "image too large")
    gif = io.BytesIO()
    seven.save(gif, "GIF", save_all=True, append_images=[two, two])
    put("animated.gif", gif.getvalue(), 7)
    tiff = io.BytesIO()
    seven.save(tiff, "TIFF", save_all=True, append_images=[two])
    put("pages.tiff", tiff.getvalue(), 7)
    put("one-pixel.png", _png(Image.new("L", (1, 1), 0)), "no digit found")
    put("all-white.png", _png(Image.new("L", (64, 64), 255)), "no digit found")
    put("all-black.png", _png(Image.new("L", (64, 64), 0)), "no digit found")
    put("sixteen-bit.png", _png(Image.fromarray(np.asarray(seven).astype("<u2") * 257)), 7)
    cmyk = io.BytesIO()
    seven.resize((112, 112)).convert("CMYK").save(cmyk, "JPEG", quality=95)
    put("cmyk.jpg", cmyk.getvalue(), 7)
    pal = seven.convert("P")
    put("palette-transparent.png", _png(pal, transparency=255), 7)
    put(b"new\nline-\xff\xfe.png", good, 7)
    traversal = io.BytesIO()
    with zipfile.ZipFile(traversal, "w") as zf:
        zf.writestr("../../../escape.png", good)
    put("traversal.zip", traversal.getvalue(), None)  # one member: ".../escape.png" -> 7
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("huge.png", b"\0" * (64 << 20))
    put("zipbomb.zip", bomb.getvalue(), None)  # one member -> image too large
    return expected


ARCHIVE_MEMBERS = {"traversal.zip:../../../escape.png": 7, "zipbomb.zip:huge.png": "image too large"}
