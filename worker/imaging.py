"""Image bytes in, a 28x28 MNIST-style digit out. Pillow and numpy only.

Decoding is defensive: an allowlist of formats (never EPS/PDF, which call out to
Ghostscript), a byte cap, a pixel cap checked from the header before any pixel is
decoded, and every failure mapped to one ``ImageError`` kind.

Normalisation does what MNIST itself did to NIST's scans: decide polarity, remove the
background, crop to the ink, fit into 20x20 keeping the aspect ratio, and put the
centre of mass at the centre of a 28x28 field.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from digitscan.errors import (
    BlankImage,
    CorruptImage,
    ImageError,
    ImageTimeout,
    ImageTooLarge,
    UnsupportedFormat,
)
from digitscan.worker.settings import Limits

# Pillow format ids that we decode. TIFF and GIF: first page/frame only.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM")
# Recognised but refused: they run external programs or are not images of a page.
_REFUSED_SIGNATURES = {
    b"%!PS": "EPS/PostScript",
    b"\xc5\xd0\xd3\xc6": "EPS",
    b"%PDF": "PDF",
}
# Work on at most this many pixels a side: a digit needs no more, and it bounds time/memory.
WORK_SIDE = 512
FIT_BOX = 20
FIELD = 28


@contextlib.contextmanager
def time_bound(seconds: float):
    """Raise ImageTimeout in this thread after ``seconds``. Uses SIGALRM, so it bounds only
    the main thread (where Celery's prefork and solo pools run tasks); Pillow decodes in
    blocks and the alarm lands between them."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise ImageTimeout(f"more than {seconds:g} s to decode and normalise")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _describe_refused(data: bytes) -> str | None:
    head = data[:8]
    for sig, name in _REFUSED_SIGNATURES.items():
        if head.startswith(sig):
            return name
    return None


def decode(data: bytes, limits: Limits = Limits()) -> Image.Image:
    """Decode image bytes to an 8-bit grayscale image (ink on paper, as given)."""
    if not data:
        raise CorruptImage("empty file")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes; the limit is {limits.max_bytes}")
    refused = _describe_refused(data)
    if refused:
        raise UnsupportedFormat(f"{refused} is not accepted; use "
                                f"{', '.join(ALLOWED_FORMATS)}")
    with warnings.catch_warnings():
        # Pillow warns about odd metadata (EXIF, TIFF tags); that is no reason to refuse.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = im.size
            if width * height > limits.max_pixels:
                raise ImageTooLarge(f"{width}x{height} = {width * height} pixels; the limit is "
                                    f"{limits.max_pixels}")
            if width < 1 or height < 1:
                raise CorruptImage(f"{width}x{height} has no pixels")
            if im.format == "JPEG":
                # Let libjpeg scale down while decoding: big photos of a digit decode fast.
                im.draft("L", (WORK_SIDE, WORK_SIDE))
            im.seek(0)
            im.load()
            return to_gray(im)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise UnsupportedFormat(f"not a {', '.join(ALLOWED_FORMATS)} image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from None
        except Exception as exc:
            # Untrusted bytes reach deep into Pillow's plugins, which fail in many ways
            # (OSError, SyntaxError, struct.error, EOFError, IndexError, ...): for the
            # user each one means the same thing.
            raise CorruptImage(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                               ) from None


def to_gray(im: Image.Image) -> Image.Image:
    """Any mode to 'L'. Transparency is composited on white paper, 16-bit is rescaled."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(scaled.round().astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        paper = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(paper, im)
    if im.mode == "CMYK":
        im = im.convert("RGB")
    return im.convert("L")


def normalize(gray: Image.Image) -> np.ndarray:
    """A grayscale scan of one digit -> uint8 [28,28], bright ink on black (MNIST polarity)."""
    if max(gray.size) > WORK_SIDE:
        gray = gray.copy()
        gray.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    a = np.asarray(gray, dtype=np.float32)

    # Polarity: ink covers a minority of a digit cell, so the median is the paper.
    if np.median(a) > 127:
        a = 255.0 - a
    background = float(np.median(a))
    # Noise level of the paper (robust: MAD of the background-side pixels).
    noise = 1.4826 * float(np.median(np.abs(a[a <= background + 1e-3] - background))) \
        if np.any(a <= background) else 0.0
    peak = float(a.max())
    if peak - background < 32:
        raise BlankImage("the image is blank or has almost no contrast")
    # Ink strength: 0 at the paper (less a few noise levels), 255 at the darkest stroke.
    floor = background + 4 * noise
    a = np.clip((a - floor) / (peak - floor), 0.0, 1.0) * 255.0
    # Crop to where the ink is clearly ink: JPEG ringing and paper speckle stay below 15 %
    # of the stroke strength, and would otherwise stretch the box and shrink the digit.
    ink = a > 0.15 * 255
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = FIT_BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    patch = Image.fromarray(crop.astype(np.uint8), "L")
    if (new_w, new_h) != (w, h):
        patch = patch.resize((new_w, new_h), Image.Resampling.LANCZOS)
    p = np.asarray(patch, dtype=np.float32)

    total = p.sum()
    ys, xs = np.indices(p.shape)
    cy, cx = (ys * p).sum() / total, (xs * p).sum() / total
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    # MNIST's centre of mass sits at pixel (14, 14) on average (measured on the test set).
    top = int(round(FIELD / 2 - cy))
    left = int(round(FIELD / 2 - cx))
    # Clip the paste to the field: a very lopsided digit may have its mass off-centre.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + new_h, FIELD), min(left + new_w, FIELD)
    field[y0:y1, x0:x1] = p[y0 - top : y1 - top, x0 - left : x1 - left]
    return field.round().clip(0, 255).astype(np.uint8)


def prepare(data: bytes, limits: Limits = Limits()) -> np.ndarray:
    """Bytes of one image file -> uint8 [28,28] ready for the model, within the time bound."""
    with time_bound(limits.timeout_s):
        return normalize(decode(data, limits))

