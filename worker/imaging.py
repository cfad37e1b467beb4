"""Image bytes in, a 28x28 MNIST-style digit out. Pillow and numpy only.

Decoding is defensive: an allowlist of formats (never EPS/PDF, which call out to
Ghostscript), a byte cap, a pixel cap checked from the header before any pixel is
decoded, and every failure mapped to one ``ImageError`` kind.

Normalisation first cleans a form cell (drop-out colours, printed box borders and rules,
the neighbours' walls at the cut, specks and stray marks), then does what MNIST itself
did to NIST's scans: crop to the ink, fit into 20x20 keeping the aspect ratio, and put
the centre of mass at the centre of a 28x28 field.

OpenCV (the headless wheel) does the pixel work: connected components, morphology,
area resampling and moments in C, where numpy would need a dozen passes per image.
"""

from __future__ import annotations

import contextlib
import functools
import io
import signal
import threading
import time
import warnings
from collections.abc import Callable

import cv2
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

try:  # the cleanup's hot steps in C; optional at install (setup.py)
    from digitscan.worker import _cleanup as _compiled
except ImportError:
    _compiled = None
# Whether this install runs the compiled steps (a boxed cell's cleanup ~3x faster; the same
# pixels as the numpy/OpenCV versions beside each, which run without them).
COMPILED = _compiled is not None

# One image is far too small to split across threads, and the pool already runs one
# process per core: OpenCV's own thread pool would only oversubscribe them.
cv2.setNumThreads(1)
# A file OpenCV cannot decode takes Pillow's path, which says what is wrong with it;
# OpenCV's own warning about it would only be noise in the worker's log.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

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
ANALYSIS_SIDE = 128  # cleanup and fitting run on at most this many pixels a side
FIT_BOX = 20
FIELD = 28


# What a bug in the decoding and cleanup code raises (numpy, OpenCV, plain Python), as
# opposed to the ImageErrors it raises on purpose.
BUGS = (ArithmeticError, AttributeError, IndexError, KeyError, TypeError, ValueError, cv2.error)

# The bound whose SIGALRM handler ``time_bounds`` has installed, if any.
_installed: float | None = None


def _expire(seconds: float):
    def expire(signum, frame):
        raise ImageTimeout(f"more than {seconds:g} s to decode and normalise")

    return expire


def _bounded() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_bound(seconds: float):
    """Raise ImageTimeout in this thread after ``seconds``. Uses SIGALRM, so it bounds only
    the main thread (where Celery's prefork and solo pools run tasks); Pillow decodes in
    blocks and the alarm lands between them. The handler is installed here and the one
    before restored, unless an enclosing ``time_bounds`` holds it already."""
    if seconds <= 0 or not _bounded():
        yield
        return
    held = _installed == seconds  # inside time_bounds(seconds): its handler is in place
    previous = None if held else signal.signal(signal.SIGALRM, _expire(seconds))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if not held:
            signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def time_bounds(seconds: float):
    """Hold the handler of ``time_bound(seconds)`` for every bound inside (a chunk's
    images), and restore the one before once at the end: installing and restoring it for
    each image took ~5 us, 6 % of a worker's time on MNIST-sized PNGs."""
    global _installed
    if seconds <= 0 or _installed is not None or not _bounded():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _expire(seconds))
    _installed = seconds
    try:
        yield
    finally:
        _installed = None
        signal.signal(signal.SIGALRM, previous)


def _describe_refused(data: bytes) -> str | None:
    head = data[:8]
    for sig, name in _REFUSED_SIGNATURES.items():
        if head.startswith(sig):
            return name
    return None


@contextlib.contextmanager
def _pillow_errors():
    """Every way Pillow fails on untrusted bytes, as one ``ImageError`` kind each."""
    with warnings.catch_warnings():
        # Pillow warns about odd metadata (EXIF, TIFF tags); that is no reason to refuse.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
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


def _open(data: bytes, limits: Limits) -> Image.Image:
    """The checks, and Pillow's reading of the header: no pixel is decoded yet."""
    if not data:
        raise CorruptImage("empty file")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes; the limit is {limits.max_bytes}")
    refused = _describe_refused(data)
    if refused:
        raise UnsupportedFormat(f"{refused} is not accepted; use "
                                f"{', '.join(ALLOWED_FORMATS)}")
    with _pillow_errors():
        im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = im.size
        if width * height > limits.max_pixels:
            raise ImageTooLarge(f"{width}x{height} = {width * height} pixels; the limit is "
                                f"{limits.max_pixels}")
        if width < 1 or height < 1:
            raise CorruptImage(f"{width}x{height} has no pixels")
        return im


def _load(im: Image.Image) -> Image.Image:
    with _pillow_errors():
        if im.format == "JPEG":
            # Let libjpeg scale down while decoding: big photos of a digit decode fast.
            im.draft(im.mode, (WORK_SIDE, WORK_SIDE))
        im.seek(0)
        im.load()
        return to_paper(im)


def decode(data: bytes, limits: Limits = Limits()) -> Image.Image:
    """Decode image bytes to an 8-bit 'L' or 'RGB' image (ink on paper, as given)."""
    return _load(_open(data, limits))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What OpenCV decodes to exactly the pixels Pillow gives (the same libpng and libjpeg-turbo
# underneath): PNG by (bit depth, colour type), 8-bit grey, 8-bit RGB and palettes of any
# depth (Pillow's to_paper makes them RGB; one with a transparent entry, told apart by its
# tRNS, is Pillow's); JPEG with one or three 8-bit channels (_jpeg_header).
_PNG_READS = {(8, 0): cv2.IMREAD_GRAYSCALE, (8, 2): cv2.IMREAD_COLOR_RGB,
              **{(depth, 3): cv2.IMREAD_COLOR_RGB for depth in (1, 2, 4, 8)}}
# JPEG frames libjpeg-turbo and Pillow both read (baseline, extended, progressive), and the
# markers that stand alone, without a length (TEM, RST0-7).
_JPEG_FRAMES = (0xC0, 0xC1, 0xC2)
_JPEG_BARE = {0x01, *range(0xD0, 0xD8)}


def _png_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, OpenCV flag) of a PNG that OpenCV reads as Pillow would, from its
    IHDR and the chunks before its first IDAT; None for any other."""
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    flag = _PNG_READS.get((data[24], data[25]))
    if flag is None:
        return None
    pos = 33  # signature, IHDR's length, type, 13 bytes and CRC
    while pos + 8 <= len(data):
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            return int.from_bytes(data[16:20]), int.from_bytes(data[20:24]), flag
        if kind in (b"tRNS", b"acTL"):
            # A transparent colour: Pillow composites it on paper. An animation: OpenCV
            # reads its first frame, Pillow (and a viewer without animation) the default
            # image, which need not be a frame.
            return None
        pos += 12 + int.from_bytes(data[pos : pos + 4])
    return None


def _jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, OpenCV flag) of an 8-bit grey or 3-channel JPEG, from its frame
    header, walking well-formed segments up to the start of the scan; None for any other
    (CMYK, 12-bit, lossless, anything odd before the scan)."""
    pos, end, found = 2, len(data), None
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte
            pos += 1
            continue
        if marker in _JPEG_BARE:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan
            return found
        length = int.from_bytes(data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if marker not in _JPEG_FRAMES or found or length < 8 or pos + 2 + length > end \
                    or data[pos + 4] != 8 or data[pos + 9] not in (1, 3):
                return None
            found = (int.from_bytes(data[pos + 7 : pos + 9]), int.from_bytes(data[pos + 5 : pos + 7]),
                     cv2.IMREAD_GRAYSCALE if data[pos + 9] == 1 else cv2.IMREAD_COLOR_RGB)
        elif length < 2:
            return None
        pos += 2 + length
    return None


def _read_whole(data: bytes, limits: Limits) -> np.ndarray | None:
    """The pixels of an 8-bit grey or RGB PNG or JPEG (a palette PNG as RGB) within the
    limits, by OpenCV from a header read here; None for any other file, and any it will not
    decode whole. Pillow's reading of the header cost more than OpenCV's decoding of the
    whole of a small image (an MNIST PNG: 10 of 17 us, when OpenCV decoded what Pillow's
    header allowed)."""
    if len(data) > limits.max_bytes:
        return None
    if data.startswith(_PNG_SIGNATURE):
        header = _png_header(data)
    elif data.startswith(b"\xff\xd8\xff"):
        header = _jpeg_header(data)
    else:
        return None
    if header is None:
        return None
    width, height, flag = header
    if not (0 < width <= WORK_SIDE and 0 < height <= WORK_SIDE) or width * height > limits.max_pixels:
        return None
    a = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    return a if a is not None and a.shape[:2] == (height, width) else None


def decode_array(data: bytes, limits: Limits = Limits()) -> np.ndarray:
    """``decode`` as a uint8 array ([h, w] or [h, w, 3]). Nearly every scan is an 8-bit grey
    or RGB PNG or JPEG: OpenCV decodes those straight into the array (``_read_whole``), the
    same pixels without Pillow's Python-side parsing of the file and the copy out of a Pillow
    image (an MNIST PNG 37 -> 8 us). EXIF orientation is ignored, as Pillow does. Anything
    else, and any file OpenCV will not decode whole, takes Pillow's path, which checks it
    again and names what is wrong with it. (libjpeg-turbo itself reports a corrupt but
    readable JPEG on stderr, the worker's log.)"""
    whole = _read_whole(data, limits)
    return whole if whole is not None else np.asarray(decode(data, limits))


def to_paper(im: Image.Image) -> Image.Image:
    """Any mode to 'L' or 'RGB' on white paper. Colour is kept: a drop-out red or blue box
    is told from ink by it. Transparency is composited on white, 16-bit is rescaled."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(scaled.round().astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        paper = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(paper, im).convert("RGB")
    if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    if im.mode == "RGB":
        return im
    return im.convert("L")


def ink_of(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 ink strength (MNIST polarity: ink bright) of a scan on paper, either polarity.

    On light paper a pixel's ink is 255 minus the mean of its brightness and its brightest
    channel: drop-out colours (a red, light-blue or green printed box: one channel near 255,
    and light) fall to a third of black's strength or less, while black, grey and ballpoint
    blue (dark, though its blue channel is bright: by the brightest channel alone it would
    fall to half of a black box's strength, and thin strokes to nothing) keep theirs. An
    image that is mostly dark is already bright ink on black (MNIST itself) and is taken as
    it is."""
    a = np.asarray(image, dtype=np.uint8)
    gray = a if a.ndim == 2 else cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    # Ink covers a minority of a cell, so the median is the paper: a dark median (half the
    # pixels or more at or below 127) means bright ink on black.
    if gray.size - cv2.countNonZero(_above(gray, 127)) >= (gray.size + 1) // 2:
        return gray
    if a.ndim == 2:
        return cv2.bitwise_not(gray)
    if _compiled is not None:  # the same pixels in one pass (tests/test_imaging.py)
        out = np.empty_like(gray)
        _compiled.ink(np.ascontiguousarray(a), gray, out, *gray.shape)
        return out
    r, g, b = cv2.split(a)
    return cv2.bitwise_not(cv2.addWeighted(cv2.max(cv2.max(r, g), b), 0.5, gray, 0.5, 0))


_LEVELS = np.arange(256, dtype=np.float32)
_FIVE = np.ones(5)
# Structuring elements, made once: a boxed cell's cleanup asks for a dozen (read-only to
# OpenCV).
_SQUARE3 = np.ones((3, 3), np.uint8)
_SQUARE5 = np.ones((5, 5), np.uint8)


@functools.lru_cache(maxsize=512)
def _rect(width: int, height: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_RECT, (width, height))


def _above(a: np.ndarray, level: float) -> np.ndarray:
    """255 where uint8 ``a`` > ``level``, else 0. cv2.threshold compares 8-bit pixels with
    the level's floor, which for integers is the same test; it takes 0.7 us on a 28x28
    image where cv2.compare with a float scalar takes 2.1."""
    return cv2.threshold(a, level, 255, cv2.THRESH_BINARY)[1]


def _stretch(ink: np.ndarray) -> np.ndarray | None:
    """Paper to 0 and the darkest stroke to 255, or None if there is no contrast: the
    compiled stretch where it was built, else ``_stretch_numpy`` (the same pixels)."""
    if _compiled is None:
        return _stretch_numpy(ink)
    ink = np.ascontiguousarray(ink)
    out = np.empty_like(ink)
    return out if _compiled.stretch(ink, out, *ink.shape) else None


def _stretch_numpy(ink: np.ndarray) -> np.ndarray | None:
    """``_stretch`` in numpy and OpenCV: the reference the compiled one is held to."""
    # Counts of each level, by OpenCV (~2.5x numpy's bincount, which widens every pixel to
    # int64 first); float32 counts and sums are exact up to 2^24 pixels (a cell has 128^2).
    hist = cv2.calcHist([ink], [0], None, [256], [0, 256]).ravel()
    cum = hist.cumsum()
    total = int(cum[-1])
    median = int(np.searchsorted(cum, (total + 1) // 2))
    # The paper is the commonest level at or below the median: the median itself in most
    # cells, but a big digit in a heavy box can cover half the cell, and then the median
    # is ink, and the paper estimate would swallow a lighter pen.
    paper = int(np.convolve(hist[: median + 1], _FIVE, "same").argmax())
    # Paper noise: the spread of the darker-than-paper half (robust, from the histogram).
    below = cum[paper]
    low = int(np.searchsorted(cum, below // 4)) if below else paper
    noise = max(0, paper - low) * 1.5
    peak = int(cv2.minMaxLoc(ink)[1])
    if peak - paper < 32:
        return None
    floor = paper + 4 * noise + 2
    if peak - floor < 16:
        floor = paper + (peak - paper) / 2
    return cv2.LUT(ink, _stretch_lut(floor, peak))


@functools.lru_cache(maxsize=8192)
def _stretch_lut(floor: float, peak: int) -> np.ndarray:
    """Levels from ``floor`` up to ``peak`` onto 0-255, shared (read-only). Building one is
    four numpy calls; 40,000 cells of the population sets use ~9,000 pairs, three in four
    cells one seen before: normalisation 2-3 % faster on each population (A B, same process,
    medians of 7), the same pixels on all 40,000."""
    lut = ((_LEVELS - floor) * (255.0 / (peak - floor))).clip(0, 255).round().astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _runs_numpy(mask: np.ndarray, horizontal: bool, fraction: float,
                spanning: bool = False) -> np.ndarray | None:
    """Pixels of straight runs of ink over ``fraction`` of the cell, in its outer third,
    tolerating a tilt of a few degrees; None where there are none. ``spanning``: only runs
    that, with the other pieces on their line, span that much of the cell themselves.

    In numpy and OpenCV: the reference worker/_cleanup.c's runs is held to (the same
    pixels: tests/test_imaging.py), and what runs where it was not built."""
    h, w = mask.shape
    along, across = (w, h) if horizontal else (h, w)
    length = int(fraction * along)
    if length < 8:
        return None
    band = across // 3
    # Thicken across the line first, so a slightly tilted line stays one run along it.
    k = max(3, across // 40 * 2 + 1)
    # Each outer third is searched on its own, with the k // 2 rows (columns) next to it
    # that its thickening reaches: the same runs as over the whole cell, on two thirds of
    # its pixels (the thickening works across the line, the opening along it).
    reach = min(across, band + k // 2)
    parts = ((0, slice(0, band)), (across - reach, slice(reach - band, reach)))
    # A run needs ink in that many columns (rows) of its part (half as many where it meets
    # the cell's edge, past which the erosion sees ink): most cells have no rule, and this
    # rules them out without any morphology, or even a transpose.
    need = (length + 1) // 2
    k_along = _rect(length, 1)
    # Upright runs are the rows of the transposed cell: OpenCV works fastest along rows, and
    # reduces along columns 2-4x faster than numpy's max across them (or OpenCV's own
    # reduction along rows); a transpose costs less than either, or strided morphology.
    rows = mask if horizontal else cv2.transpose(mask)
    hits = []
    for s, _ in parts:
        line = cv2.reduce(rows[s : s + reach], 0, cv2.REDUCE_MAX)
        # And a run in any row of the thickened part is one in the part's projection too:
        # the erosion below, on that one line, finds it or proves there is none (in 90 % of
        # the plain-paper parts with enough inked columns, 20-35 % of the boxed and printed)
        # for ~3 us, where the morphology over the part costs 10-15.
        hits.append(cv2.countNonZero(line) >= need
                    and cv2.countNonZero(cv2.erode(line.reshape(1, -1), k_along)) > 0)
    if not any(hits):
        return None
    runs = np.zeros_like(rows)
    k_across = _rect(1, k)
    for hit, (start, keep) in zip(hits, parts):
        if not hit:
            continue
        # An opening is an erosion then a dilation; where the erosion leaves nothing there
        # is no run, and the dilation (the other half of the cost) is skipped. It leaves a
        # rule's few rows of the part: the dilation along them, and all that follows, runs
        # on those rows alone (a kernel along the rows never reaches the others): the same
        # pixels from a fraction of them.
        band = rows[start : start + reach]
        core = cv2.erode(cv2.dilate(band, k_across), k_along)
        _, top, _, tall = cv2.boundingRect(core)
        if tall:
            found = cv2.bitwise_and(cv2.dilate(core[top : top + tall], k_along),
                                    band[top : top + tall])
            # The erosion sees ink past the cell's edge, so a run from an edge needs only
            # half the length: a rule cut by the edge, or a digit's bar touching it.
            if spanning and cv2.boundingRect(found)[2] < length:
                continue
            lo, hi = max(keep.start, top), min(keep.stop, top + tall)
            if lo < hi:
                runs[start + lo : start + hi] = _own_band(found, top)[lo - top : hi - top]
    if not cv2.countNonZero(runs):
        return None
    return runs if horizontal else cv2.transpose(runs)


def _own_band(runs: np.ndarray, top: int = 0) -> np.ndarray:
    """The pixels of horizontal ``runs`` that are the rule itself. The thickening that lets a
    tilted rule be found also takes in any ink that touches it along its length: a 7's bar
    just under the top of its box, a 2's base on the bottom rule, a stem along a wall. In
    each column the rule is as thick as in its thinner quarter (a bar can cover half its
    length); where it is thicker, only the rows within that thickness of its centre line
    (as the columns with nothing else on them place it, tilt included) are the rule, and
    the rest is left to the digit. ``top``: the band's row where ``runs`` starts (the centre
    line is placed by the band's row numbers, so the same sums give the same pixels)."""
    counts = cv2.reduce(runs, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255
    cols = np.flatnonzero(counts)
    if len(cols) < 8:
        return runs
    inked = counts[cols]
    quarter = len(inked) // 4
    thickness = float(np.partition(inked, quarter)[quarter])
    wide = inked > thickness + 1
    n_wide = int(np.count_nonzero(wide))
    if not n_wide or len(inked) - n_wide < quarter:
        return runs  # nothing on the rule; or no line to go by (two rules in one band)
    clean, dirty = cols[~wide], cols[wide]
    rows = np.arange(top, top + runs.shape[0], dtype=np.float32)
    centre = (rows @ runs)[clean] / (255.0 * counts[clean])
    line = np.interp(dirty, clean, centre)
    sub = runs[:, dirty]
    sub[np.abs(rows[:, None] - line) > thickness / 2 + 0.5] = 0
    runs[:, dirty] = sub  # runs is _runs_numpy's own fresh array
    return runs


def rules_of(mask: np.ndarray) -> np.ndarray:
    """Pixels of printed rules: box borders, comb-field rules and walls, ruling lines.

    A rule is a straight run in the cell's outer third that either crosses (nearly) the
    whole cell, as rules cut with the cell do, or is one side of a box: long runs in both
    directions that meet in at least two corners. A digit's own strokes do neither: in a
    cell cut around it they stop short of the edges, and its curves part its straight bits.

    In one call where the compiled steps were built (the same pixels: tests/test_imaging.py);
    below, the reference, and what runs without them.
    """
    if _compiled is not None:
        out = np.empty_like(mask)
        _compiled.rules(np.ascontiguousarray(mask), out, *mask.shape)
        return out
    h_long, v_long = _runs_numpy(mask, True, 0.55), _runs_numpy(mask, False, 0.55)
    if h_long is not None and v_long is not None:
        # A box's sides meet at right-angled corners; a large 0, a 2's base and its stem
        # are long and straight-ish too, but their curves keep the straight parts apart.
        box = cv2.bitwise_or(h_long, v_long)
        if _meet_twice_numpy(h_long, v_long) and _encloses(mask, box):
            return box
    # A run over 90 % of the cell is also one over 55 %: where there was none, skip the search.
    h_full = None if h_long is None else _runs_numpy(mask, True, 0.9, spanning=True)
    v_full = None if v_long is None else _runs_numpy(mask, False, 0.9, spanning=True)
    if h_full is None and (v_full is None or
                           cv2.countNonZero(v_full) > 0.8 * cv2.countNonZero(mask)):
        # No rule; or upright runs and nothing else: a tall 1 in a cell cut close around it
        # (or in a drop-out box), not a wall; an empty cell has no such ink at all.
        return np.zeros_like(mask)
    if h_full is None or v_full is None:
        return v_full if h_full is None else h_full
    return cv2.bitwise_or(h_full, v_full)


def _meet_twice_numpy(h_runs: np.ndarray, v_runs: np.ndarray) -> bool:
    """Whether horizontal and upright runs, each widened by a 5 x 5 square, meet in two
    places or more (a box's corners). The reference for worker/_cleanup.c's corners."""
    corners = cv2.bitwise_and(cv2.dilate(h_runs, _SQUARE5), cv2.dilate(v_runs, _SQUARE5))
    return cv2.connectedComponents(corners)[0] - 1 >= 2


def _encloses(mask: np.ndarray, box: np.ndarray) -> bool:
    """True if what is left without ``box`` lies mostly well inside it (or nothing is left),
    or is mostly one piece, as a digit in its box is, even one written against a wall; a
    thick 0 taken for a box leaves only its corner arcs, apart, near the box's sides."""
    rest = cv2.bitwise_and(mask, cv2.bitwise_not(box))
    total = cv2.countNonZero(rest)
    if total <= 0.1 * cv2.countNonZero(box):
        return True  # nothing, or the box's own corner pixels: an empty box
    x0, y0, bw, bh = cv2.boundingRect(box)
    m = max(2, int(0.15 * min(bh - 1, bw - 1)))
    inside = cv2.countNonZero(rest[y0 + m : y0 + bh - m, x0 + m : x0 + bw - m])
    if inside >= 0.6 * total:
        return True
    _, _, stats, _ = cv2.connectedComponentsWithStats(rest, connectivity=8)
    return stats[1:, cv2.CC_STAT_AREA].max() >= 0.6 * total


def _level_numpy(a: np.ndarray, rules: np.ndarray) -> int:
    """How dark the ink is away from the printed ``rules`` and their grey, anti-aliased
    edges (a pixel around them): the 98th percentile of its inked pixels, from a histogram
    (no sort). The reference for worker/_cleanup.c's level."""
    exclude = cv2.dilate(rules, _SQUARE3)
    hist = cv2.calcHist([a], [0], cv2.bitwise_not(exclude), [256], [0, 256]).ravel()
    hist[0] = 0
    cum = hist.cumsum()
    if cum[-1] <= 0:
        return 0
    return int(np.searchsorted(cum, 0.98 * cum[-1]))


def ink_mask(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the cell's clear ink, the printed rules in it). Clear ink is judged against the
    digit's own darkness, not the box's: a pen lighter than the printed border (blue ink in
    a black box, thin strokes beside a heavy rule) would otherwise fall below the threshold
    and leave only the box. In one call where the compiled steps were built (the same
    pixels: tests/test_imaging.py); below, the reference."""
    if _compiled is not None:
        a = np.ascontiguousarray(a)
        mask, rules = np.empty_like(a), np.empty_like(a)
        _compiled.ink_mask(a, mask, rules, *a.shape)
        return mask, rules
    mask = _above(a, 0.35 * 255)
    rules = rules_of(mask)
    if not cv2.countNonZero(rules):
        return mask, rules
    level = _level_numpy(a, rules)
    if 0 < level < 0.8 * 255:
        mask = _above(a, 0.35 * level)
        rules = rules_of(mask)  # found again: at this threshold they are a little wider
    return mask, rules


def remove_rules(mask: np.ndarray, rules: np.ndarray) -> np.ndarray:
    """``mask`` without the printed ``rules``, but keeping the strokes that cross them:
    compiled where it was built, else ``_remove_rules_numpy`` (the same pixels)."""
    if not cv2.countNonZero(rules):
        return mask
    if _compiled is None:
        return _remove_rules_numpy(mask, rules)
    out = np.empty_like(mask)
    _compiled.unrule(np.ascontiguousarray(mask), np.ascontiguousarray(rules), out, *mask.shape)
    return out


def _remove_rules_numpy(mask: np.ndarray, rules: np.ndarray) -> np.ndarray:
    """``remove_rules`` in OpenCV, for a cell with rules: the reference the compiled one is
    held to."""
    rest = cv2.bitwise_and(mask, cv2.bitwise_not(rules))
    # Where a stroke crosses a rule, ink continues on both sides of it: bridge those
    # pixels back (a closing of what is left, limited to the rule's own pixels).
    h, w = mask.shape
    t = max(3, min(h, w) // 16 * 2 + 1)
    bridged = cv2.morphologyEx(rest, cv2.MORPH_CLOSE, _rect(t, t))
    return cv2.bitwise_or(rest, cv2.bitwise_and(bridged, rules))


def _comb_ticks(labels: np.ndarray, stats: np.ndarray, by_rules: np.ndarray, side: int) -> np.ndarray:
    """Which components (by label) are a comb field's ticks: upright stubs standing on a
    removed rule (or hanging from one), thin, straight, under half the cell tall, and at
    least two of one length, as a comb prints them between its boxes. A digit's stroke that
    stands on the rule is a stub of a length of its own, and stays. (The reference for
    worker/_cleanup.c's clear_ticks, within keep_digit's one call there.)"""
    ticks = np.zeros(len(stats), bool)
    w, h, area = stats[:, 2], stats[:, 3], stats[:, 4]
    stub = (3 * w <= h) & (area >= 0.6 * w * h) & (h <= side // 2)
    stub[0] = False
    if np.count_nonzero(stub) < 2:
        return ticks
    touching = np.zeros(len(stats), bool)
    touching[labels[by_rules > 0]] = True
    idx = np.flatnonzero(stub & touching)
    if len(idx) < 2:
        return ticks
    length = h[idx].astype(np.float32)
    alike = np.abs(length[:, None] - length) <= np.maximum(2, 0.15 * length)[:, None]
    ticks[idx[alike.sum(1) >= 2]] = True
    return ticks


def keep_digit(mask: np.ndarray, rules: np.ndarray | None = None) -> np.ndarray | None:
    """The components that make up the digit: the largest, those near it that are not
    specks (a 5's detached bar, a broken stroke), and those that continue a chain of such
    pieces (a stroke broken into dots or dashes). Stray marks away from the digit, specks,
    bits of the neighbours' walls at the cut and, given the ``rules`` removed from ``mask``,
    a comb's ticks standing on them are dropped. None if nothing is left.

    Labelled and chosen in one call where the compiled steps were built (the same pixels:
    tests/test_imaging.py); below, the reference."""
    if _compiled is not None:
        kept = np.empty_like(mask)
        found = _compiled.digit(np.ascontiguousarray(mask),
                                None if rules is None else np.ascontiguousarray(rules), kept,
                                *mask.shape)
        return kept if found else None
    h, w = mask.shape
    # Components of the inked part only, with 16-bit labels (a 128 px cell has at most
    # 64 x 64 components), by Grana's algorithm: the same components and statistics as
    # OpenCV's default over the whole cell with 32-bit labels, in 14 us instead of 46.
    x0, y0, iw, ih = cv2.boundingRect(mask)
    if not iw:
        return None
    n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask[y0 : y0 + ih, x0 : x0 + iw], 8, cv2.CV_16U, cv2.CCL_GRANA)
    # A comb's ticks are printed, not written: never the digit (on cell sets drawn with seed
    # 1, boxed 99.21 -> 99.24 %, printed 99.28 -> 99.30, digits sent to a person 1.69 ->
    # 1.64 %; then once on the published sets, boxed 99.11 -> 99.12, printed 99.07 -> 99.12).
    if n > 3 and rules is not None and cv2.countNonZero(rules):
        by_rules = cv2.dilate(rules, _SQUARE3)[y0 : y0 + ih, x0 : x0 + iw]
        ticks = _comb_ticks(labels, stats, by_rules, max(h, w))
        if ticks.any():  # never the digit, nor a part of it
            stats[ticks, cv2.CC_STAT_AREA] = 0
    return _keep_numpy(labels, stats, h, w, x0, y0)


def _keep_numpy(labels: np.ndarray, stats: np.ndarray, h: int, w: int, x0: int,
                y0: int) -> np.ndarray | None:
    """``keep_digit``'s choice among the components (``labels`` and ``stats`` of the inked box
    at ``x0``, ``y0`` of an ``h`` x ``w`` cell) in numpy: the reference the compiled one is
    held to, and what runs where it was not built."""
    n, (ih, iw) = len(stats), labels.shape
    areas = stats[1:, cv2.CC_STAT_AREA]
    # The largest; of equals, the topmost, then leftmost, then the first in raster order
    # (not whichever the labelling numbered first: that depends on the algorithm, and on
    # where the crop starts).
    main = 1
    if n > 2:
        order = np.lexsort((stats[1:, 0], stats[1:, 1], -areas))
        a, b = order[:2] + 1
        if (stats[a, [0, 1, 4]] == stats[b, [0, 1, 4]]).all():
            first = np.unique(labels, return_index=True)[1][1:]
            order = np.lexsort((first, stats[1:, 0], stats[1:, 1], -areas))
        main = int(order[0]) + 1
    if areas[main - 1] < max(3, 0.0005 * h * w):
        return None
    kept = np.zeros((h, w), np.uint8)
    if n == 2:  # one component, as in 98 % of plain-paper cells: the ink itself
        kept[y0 : y0 + ih, x0 : x0 + iw] = labels
        return kept
    stats[:, 0] += x0
    stats[:, 1] += y0
    x, y, bw, bh = (int(v) for v in stats[main, :4])
    # Near = within a margin of the main component's box, sized by the box itself.
    mx, my = max(2, bw // 2 + 1, bh // 4), max(2, bh // 3 + 1)
    # All components at once (a JPEG cell can have hundreds of specks; a Python loop over
    # them cost more than the rest of the cleanup).
    cx, cy, cw, ch, area = (stats[:, i] for i in range(5))
    biggest = int(areas[main - 1])
    near = (cx < x + bw + mx) & (cx + cw > x - mx) & (cy < y + bh + my) & (cy + ch > y - my)
    at_edge = (cx == 0) | (cy == 0) | (cx + cw == w) | (cy + ch == h)
    eligible = (area >= max(2, 0.04 * biggest)) & ~(at_edge & (area < 0.25 * biggest))
    eligible[0] = False  # the background
    eligible[main] = True
    # A stroke the pen or the scan broke into a chain of pieces (dots, dashes): a piece whose
    # box lies within an eighth of the cell of a kept piece's box is kept too, however far
    # the chain runs from the largest piece. Chosen on cell sets drawn with seed 1 (plain
    # paper 99.49 % before; pixels within a twenty-fifth of the cell, a twelfth, an eighth,
    # a fifth: 99.49 / 99.52 / 99.53 / 99.55 %, the fifth sending more digits to review;
    # boxes within an eighth 99.55 %, boxed 99.14 -> 99.21, printed 99.21 -> 99.28); then,
    # once, on the published sets: plain paper 99.48 -> 99.55 %, boxed 99.09 -> 99.11,
    # printed 99.03 -> 99.07, non-digits flagged 98.68 -> 98.74 %. (Boxes, not pixels: a
    # dozen pieces at most, where dilating the kept pixels step by step cost a tenth of a
    # boxed cell's cleanup; this costs 2-3 %.)
    pieces = np.flatnonzero(eligible)
    gap = max(2, round(0.12 * max(h, w)))
    px, py, px1, py1 = cx[pieces], cy[pieces], cx[pieces] + cw[pieces], cy[pieces] + ch[pieces]
    close = ((np.maximum.outer(px, px) - np.minimum.outer(px1, px1) <= gap)
             & (np.maximum.outer(py, py) - np.minimum.outer(py1, py1) <= gap))
    kept_piece = near[pieces] | (pieces == main)
    while True:
        more = close[kept_piece].any(axis=0) & ~kept_piece
        if not more.any():
            break
        kept_piece |= more
    chosen = np.zeros(n, np.uint8)
    chosen[pieces[kept_piece]] = 1
    kept[y0 : y0 + ih, x0 : x0 + iw] = chosen[labels]
    return kept


def _already_fitted(ink: np.ndarray) -> np.ndarray | None:
    """An image that is already what normalisation makes (28x28, bright ink on a clean black
    field, the digit within the central 20x20 and clear of the edges: MNIST's own format),
    re-centred by its centre of mass and nothing else. Cropping and re-fitting it would only
    resample it (1-2 px of blur and faint edges lost: 99.30 % instead of 99.41 % on MNIST's
    test set as PNGs, same weights), and costs ~150 us where the whole normalisation of such an
    image now costs ~25. None for anything else, which takes the whole cleanup."""
    if ink.shape != (FIELD, FIELD):
        return None
    inked = cv2.countNonZero(ink)
    # Not a clean black field, or ink on the outermost ring of pixels.
    if inked > FIELD * FIELD // 2 or inked != cv2.countNonZero(ink[1:-1, 1:-1]):
        return None
    x, y, w, h = cv2.boundingRect(_above(ink, 0.35 * 255))
    if not 0 < max(w, h) <= FIT_BOX + 1:
        return None
    m = cv2.moments(ink)
    dx = int(round(FIELD / 2 - m["m10"] / m["m00"]))
    dy = int(round(FIELD / 2 - m["m01"] / m["m00"]))
    if dx or dy:
        ink = cv2.warpAffine(ink, np.float32([[1, 0, dx], [0, 1, dy]]), (FIELD, FIELD))
    peak = int(cv2.minMaxLoc(ink)[1])
    return ink if peak == 255 else cv2.convertScaleAbs(ink, alpha=255.0 / peak)


def normalize(image: Image.Image | np.ndarray) -> np.ndarray:
    """A scan of one cell (paper or MNIST polarity, any size, any mode) -> uint8 [28,28],
    bright ink on black: rules and specks removed, cropped to the digit, fitted in 20x20,
    centre of mass at the centre of a 28x28 field (as MNIST did to NIST's scans)."""
    if isinstance(image, Image.Image):
        if max(image.size) > WORK_SIDE:
            image = image.copy()
            image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
        image = np.asarray(image)
    ink = ink_of(image)
    fitted = _already_fitted(ink)
    if fitted is not None:
        return fitted
    if max(ink.shape) > ANALYSIS_SIDE:
        # The digit ends up 20 px tall: 128 px a side keeps every stroke, and the cleanup's
        # cell-long morphology costs grow with the cell (1 ms for a 250 px cell, ~5x less).
        # Down to half size, bilinear (2x2 taps at most 2 px apart: no stroke falls between
        # them) costs 15 us where OpenCV's area averaging by a fraction costs 80-100, with
        # the same accuracy on 10,000 cells of each population; further down, only area
        # averaging keeps thin strokes.
        scale = ANALYSIS_SIDE / max(ink.shape)
        ink = cv2.resize(ink, (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale))),
                         interpolation=cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA)
    elif max(ink.shape) < ANALYSIS_SIDE // 2:
        # A small cell is analysed at twice its size (bilinear): at 1-2 px a stroke, a JPEG's
        # blur and the box's grey edges leave the thresholds below only bits of a thin digit,
        # and rules too short for the rule search. 10,000 printed digits 97.88 -> 98.64 %
        # (those under 32 px 88.8 -> 94.4 %), boxed 98.80 -> 98.89 %, digits sent to a person
        # 1.31 -> 1.03 %, the other populations unchanged; bicubic gained nothing (its
        # overshoot rings around thin strokes).
        ink = cv2.resize(ink, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    a = _stretch(ink)
    if a is None:
        raise BlankImage("the image is blank or has almost no contrast")
    # Structure is judged on clear ink: JPEG ringing and paper speckle stay below this.
    mask, rules = ink_mask(a)
    kept = keep_digit(remove_rules(mask, rules), rules)
    if kept is None:
        raise BlankImage("no ink left once the printed box and specks are removed")
    return _fit(a, kept)


def _fit(a: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The ``kept`` digit of the cleaned cell ``a``, fitted in 20x20 and pasted into the
    28x28 field by its centre of mass: compiled around OpenCV's resampling where it was
    built, else ``_fit_numpy`` (the same pixels, tests/test_imaging.py)."""
    if _compiled is None:
        return _fit_numpy(a, kept)
    data, w, h = _compiled.crop(np.ascontiguousarray(a), np.ascontiguousarray(kept), *a.shape)
    crop = _to_fit_box(np.frombuffer(data, np.uint8).reshape(h, w))
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    peak = _compiled.place(crop, field, *crop.shape, FIELD)
    if peak < 0:
        raise BlankImage("no ink left once the digit was fitted")
    return _brighten(field, peak)


def _fit_numpy(a: np.ndarray, kept: np.ndarray) -> np.ndarray:
    x0, y0, bw, bh = cv2.boundingRect(kept)
    y1, x1 = y0 + bh, x0 + bw
    # The digit's own grey edge pixels lie next to its clear ink: keep those, drop the rest.
    near = cv2.dilate(kept[y0:y1, x0:x1], _SQUARE3)
    crop = _to_fit_box(a[y0:y1, x0:x1] * near)
    new_h, new_w = crop.shape
    m = cv2.moments(crop)
    if m["m00"] <= 0:
        raise BlankImage("no ink left once the digit was fitted")
    cy, cx = m["m01"] / m["m00"], m["m10"] / m["m00"]
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    # MNIST's centre of mass sits at pixel (14, 14) on average (measured on the test set).
    top = int(round(FIELD / 2 - cy))
    left = int(round(FIELD / 2 - cx))
    # Clip the paste to the field: a very lopsided digit may have its mass off-centre.
    fy0, fx0 = max(top, 0), max(left, 0)
    fy1, fx1 = min(top + new_h, FIELD), min(left + new_w, FIELD)
    field[fy0:fy1, fx0:fx1] = crop[fy0 - top : fy1 - top, fx0 - left : fx1 - left]
    return _brighten(field, int(cv2.minMaxLoc(field)[1]))


def _to_fit_box(crop: np.ndarray) -> np.ndarray:
    """``crop`` resampled so its longer side is 20 px (area averaging down, bilinear up)."""
    h, w = crop.shape
    scale = FIT_BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        return crop
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(crop, (new_w, new_h), interpolation=interp)


def _brighten(field: np.ndarray, peak: int) -> np.ndarray:
    if 0 < peak < 255:  # resampling softens the darkest stroke; MNIST's strokes reach 255
        return cv2.convertScaleAbs(field, alpha=255.0 / peak)
    return field


def prepare(data: bytes, limits: Limits = Limits(),
            observe: Callable[[str, float], None] | None = None) -> np.ndarray:
    """Bytes of one image file -> uint8 [28,28] ready for the model, within the time bound.
    ``observe`` gets the seconds spent in "decode" and "normalise" (cleanup included)."""
    with time_bound(limits.timeout_s):
        if observe is None:
            return normalize(decode_array(data, limits))
        t0 = time.perf_counter()
        image = decode_array(data, limits)
        t1 = time.perf_counter()
        field = normalize(image)
        observe("decode", t1 - t0)
        observe("normalise", time.perf_counter() - t1)
        return field

