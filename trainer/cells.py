"""Form cells as users scan them, rendered from MNIST digits and from fonts.

One generator for every population the model must read or refuse, used both to train
(training fonts, MNIST training writers) and to test (held-out fonts, MNIST test writers,
other seeds):

    boxed      a handwritten digit in a printed box: borders 1-3 px (scaled with the cell),
               black, grey or a drop-out colour; comb fields whose rules and the
               neighbours' walls run on at the cut; digits touching or crossing the border
    printed    a machine-printed digit in one of many typefaces, any size, slight rotation,
               tinted paper, sometimes in a box
    form       a handwritten digit on plain paper, any size, off-centre, JPEG
    negative   a cell with no digit: letters, symbols, scribbles, small pictures, a digit
               crossed out

Each cell is encoded image bytes (JPEG or PNG, grey or colour), so it goes through the
worker's real decode and normalisation. Deterministic for a given seed. Numpy and Pillow
only; fonts come from the system (Debian's fonts-* packages, see the Makefile).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digitscan.contract import NOT_A_DIGIT_CLASS

FONT_DIRS = (Path("/usr/share/fonts"),)
NOT_A_DIGIT = NOT_A_DIGIT_CLASS  # the label of a cell with no digit
# Whole designs held out for the printed test set; clones of one design (Courier: Nimbus
# Mono PS and FreeMono) are held out together. Serif, sans, condensed, mono and
# handwriting-style designs, each with their bold and italic faces where they have them.
TEST_FAMILIES = ("P052", "C059", "URW Bookman", "EB Garamond", "Open Sans", "Open Sans Condensed",
                 "Cantarell", "Yanone Kaffeesatz", "Nimbus Mono PS", "FreeMono", "Inconsolata", "Comic Neue",
                 "Dancing Script")
# No digits, or digits nobody writes on a form (symbol, dingbat, maths and blackletter faces).
EXCLUDED_FAMILIES = ("Standard Symbols PS", "D050000L", "DejaVu Math TeX Gyre", "Blankenburg_UNZ1A",
                     "Linux Biolinum Keyboard O", "Linux Libertine Initials O", "Go Smallcaps")
# Letters that are a digit in many typefaces (O/0, I/l/1) are not asked to be told apart.
LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZabcdefhijkmnprtuvwxy"
AMBIGUOUS_LETTERS = "OoIlSsZzBbGgq"
# In many typefaces a 1 is drawn like a serif I (symmetric serifs, no flag) or a plain l, and
# in a digit cell such a mark is a 1: training draws some printed 1s as these glyphs, or the
# model, having seen 1s only with flags, calls every flagless serif 1 "not a digit" (a third
# of the errors on the held-out fonts' printed digits).
ONE_SHAPES = "Il"
# Symbols that are a digit in some hand or face are left out, as O, I and l are: a bar, a
# slash, brackets, ! and ' come out of the cell cleanup as a 1, and a degree sign as a 0.
# Taught as "not a digit", they taught the model that a plain upright stroke is not a 1.
SYMBOLS = "#%&@+=*$?<>~^€£¥§:;\""
AMBIGUOUS_SYMBOLS = "|/\\()[]{}!'°"


@dataclass(frozen=True)
class Font:
    path: str
    family: str
    style: str


def _distinct_digits(font: ImageFont.FreeTypeFont) -> bool:
    """True if the font draws ten different digits, none of them the missing-glyph box."""
    missing = bytes(font.getmask("\ue000"))
    masks = set()
    for ch in "0123456789":
        mask = font.getmask(ch)
        if mask.getbbox() is None or bytes(mask) == missing:
            return False
        masks.add(bytes(mask))
    return len(masks) == 10


@functools.cache
def system_fonts(dirs: tuple[Path, ...] = FONT_DIRS) -> tuple[Font, ...]:
    """Every installed TrueType/OpenType face that draws all ten digits."""
    found = []
    for d in dirs:
        for path in sorted(p for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf")):
            try:
                font = ImageFont.truetype(str(path), 40)
            except OSError:
                continue
            family, style = font.getname()
            if family in EXCLUDED_FAMILIES or not _distinct_digits(font):
                continue
            found.append(Font(str(path), family, style))
    return tuple(found)


def split_fonts(fonts: Sequence[Font] | None = None) -> tuple[list[Font], list[Font]]:
    """(training fonts, held-out test fonts): whole families apart."""
    fonts = system_fonts() if fonts is None else fonts
    test = [f for f in fonts if f.family in TEST_FAMILIES]
    train = [f for f in fonts if f.family not in TEST_FAMILIES]
    return train, test


@functools.lru_cache(maxsize=4096)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# ------------------------------------------------------------------ ink shapes (alpha 0..1)


def text_alpha(text: str, font: Font, size: int, rng: np.random.Generator) -> np.ndarray:
    """The glyph(s) as ink coverage, slightly rotated, sometimes emboldened."""
    f = _font(font.path, size)
    stroke = int(rng.random() < 0.15) * max(1, size // 30)
    left, top, right, bottom = f.getbbox(text, stroke_width=stroke)
    pad = size // 4 + 2
    im = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(im).text((pad - left, pad - top), text, fill=255, font=f,
                            stroke_width=stroke, stroke_fill=255)
    im = im.rotate(float(rng.uniform(-5, 5)), resample=Image.Resampling.BICUBIC, expand=True)
    return _tight(np.asarray(im, dtype=np.float32) / 255.0)


def mnist_alpha(digit: np.ndarray, size: int) -> np.ndarray:
    """A 28x28 MNIST digit (bright on black) scaled so its ink is ``size`` pixels tall."""
    a = _tight(digit.astype(np.float32) / 255.0)
    h, w = a.shape
    scale = size / max(h, 1)
    im = Image.fromarray((a * 255).astype(np.uint8)).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255.0


def scribble_alpha(size: int, rng: np.random.Generator) -> np.ndarray:
    """A few random pen strokes: what a cell holds when someone doodled or tested a pen."""
    im = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(im)
    width = max(1, int(size * rng.uniform(0.04, 0.1)))
    for _ in range(int(rng.integers(1, 4))):
        pts = rng.uniform(0.05, 0.95, (4, 2)) * size
        t = np.linspace(0, 1, 40)[:, None]
        curve = ((1 - t) ** 3 * pts[0] + 3 * (1 - t) ** 2 * t * pts[1] + 3 * (1 - t) * t ** 2 * pts[2]
                 + t ** 3 * pts[3])
        if rng.random() < 0.5:  # a loopy scrawl
            curve = curve + np.stack([np.sin(t[:, 0] * 25), np.cos(t[:, 0] * 25)], 1) * size * 0.08
        draw.line([tuple(p) for p in curve], fill=255, width=width, joint="curve")
    return _tight(np.asarray(im, dtype=np.float32) / 255.0)


def picture_alpha(size: int, rng: np.random.Generator) -> np.ndarray:
    """A small picture or mark: shapes, a smiley, a tick, a star, an arrow."""
    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)
    s, w = size, max(1, int(size * rng.uniform(0.04, 0.09)))
    kind = rng.integers(0, 8)
    fill = 255 if rng.random() < 0.3 else None
    if kind == 0:  # smiley
        d.ellipse([s * .1, s * .1, s * .9, s * .9], outline=255, width=w)
        d.ellipse([s * .3, s * .3, s * .4, s * .42], fill=255)
        d.ellipse([s * .6, s * .3, s * .7, s * .42], fill=255)
        d.arc([s * .28, s * .35, s * .72, s * .72], 20, 160, fill=255, width=w)
    elif kind == 1:  # star
        pts = [(s / 2 + s * .45 * r * math.sin(k * math.pi / 5),
                s / 2 - s * .45 * r * math.cos(k * math.pi / 5)) for k, r in zip(range(10), [1, .4] * 5)]
        d.polygon(pts, outline=255, fill=fill, width=w)
    elif kind == 2:  # tick
        d.line([(s * .15, s * .55), (s * .4, s * .85), (s * .9, s * .15)], fill=255, width=w)
    elif kind == 3:  # arrow
        d.line([(s * .1, s * .5), (s * .85, s * .5)], fill=255, width=w)
        d.line([(s * .6, s * .25), (s * .88, s * .5), (s * .6, s * .75)], fill=255, width=w)
    elif kind == 4:  # triangle
        d.polygon([(s * .5, s * .1), (s * .9, s * .85), (s * .1, s * .85)], outline=255, fill=fill, width=w)
    elif kind == 5:  # heart
        d.ellipse([s * .1, s * .15, s * .52, s * .55], outline=255, fill=fill, width=w)
        d.ellipse([s * .48, s * .15, s * .9, s * .55], outline=255, fill=fill, width=w)
        d.polygon([(s * .12, s * .42), (s * .5, s * .9), (s * .88, s * .42)], outline=255, fill=fill, width=w)
    elif kind == 6:  # house
        d.rectangle([s * .2, s * .45, s * .8, s * .9], outline=255, fill=fill, width=w)
        d.polygon([(s * .1, s * .48), (s * .5, s * .1), (s * .9, s * .48)], outline=255, width=w)
    else:  # a filled blob (an ink stain)
        r = s * rng.uniform(.2, .4)
        d.ellipse([s / 2 - r, s / 2 - r * .8, s / 2 + r, s / 2 + r * .8], fill=255)
    im = im.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BICUBIC, expand=True)
    return _tight(np.asarray(im, dtype=np.float32) / 255.0)


def crossed_out(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit struck through: an X, a scrawl of hatching, or a heavy blot over it."""
    h, w = alpha.shape
    im = Image.fromarray((alpha * 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    width = max(2, int(max(h, w) * rng.uniform(0.06, 0.12)))
    kind = rng.integers(0, 3)
    if kind == 0:
        d.line([(0, 0), (w, h)], fill=255, width=width)
        d.line([(0, h), (w, 0)], fill=255, width=width)
    elif kind == 1:
        for k in range(int(rng.integers(4, 8))):
            y = h * (k + 0.5) / 7
            d.line([(0, y + rng.uniform(-3, 3)), (w, y - h * 0.2)], fill=255, width=width)
    else:
        d.rectangle([w * .05, h * .2, w * .95, h * .8], fill=255)
    return np.asarray(im, dtype=np.float32) / 255.0


def _tight(a: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(a.max(1) > 0.05), np.flatnonzero(a.max(0) > 0.05)
    if not len(rows):
        return a
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


# ------------------------------------------------------------------ the cell around the ink

BOX_STYLES = ("none", "box", "comb", "teeth", "underline")
DROP_OUT = ((225, 70, 70), (235, 110, 95), (140, 185, 240), (160, 200, 235), (120, 200, 140))


def compose(alpha: np.ndarray, rng: np.random.Generator, box: str | None = None) -> bytes:
    """Ink ``alpha`` written in a cell on paper, maybe in a printed box; encoded bytes."""
    box = box or str(rng.choice(BOX_STYLES, p=[0.3, 0.3, 0.2, 0.1, 0.1]))
    gh, gw = alpha.shape
    g = max(gh, gw)
    if box == "none":
        inner_h, inner_w = int(gh * rng.uniform(1.1, 2.2)) + 4, int(gw * rng.uniform(1.1, 2.6)) + 4
    else:
        # Usually the digit sits inside its box; sometimes it fills it and touches or
        # crosses the border, as hurried writing does.
        fill = rng.uniform(0.9, 1.12) if rng.random() < 0.25 else rng.uniform(1.15, 1.7)
        inner_h = int(g * fill * rng.uniform(0.95, 1.2)) + 2
        inner_w = int(g * fill * rng.uniform(0.8, 1.3)) + 2
    # A wide glyph (W, %, a struck-out digit) may overhang its box a little, never a lot.
    inner_h, inner_w = max(inner_h, int(gh * 0.9) + 1), max(inner_w, int(gw * 0.9) + 1)
    unit = max(inner_h, inner_w) / 60  # border widths scale with the scan's resolution
    thick = max(1, int(round(rng.uniform(1, 3) * max(unit, 0.5))))
    cut = int(max(inner_h, inner_w) * rng.uniform(0.0, 0.25)) + thick  # margin at the cut
    H, W = inner_h + 2 * cut, inner_w + 2 * cut
    paper = np.array([rng.uniform(215, 255)] * 3) * rng.uniform(0.93, 1.0, 3)
    canvas = np.empty((H, W, 3), np.float32)
    canvas[:] = paper
    # The printed form first.
    colour = rng.random()
    if colour < 0.45:
        line_rgb = np.array([rng.uniform(0, 60)] * 3)
    elif colour < 0.7:
        line_rgb = np.array([rng.uniform(90, 170)] * 3)
    else:
        line_rgb = np.array(DROP_OUT[rng.integers(0, len(DROP_OUT))], np.float32)
    lines = np.zeros((H, W), np.float32)
    top, bottom, left, right = cut, cut + inner_h, cut, cut + inner_w
    if box == "box":
        lines[top - thick : top, left - thick : right + thick] = 1
        lines[bottom : bottom + thick, left - thick : right + thick] = 1
        lines[top - thick : bottom + thick, left - thick : left] = 1
        lines[top - thick : bottom + thick, right : right + thick] = 1
    elif box in ("comb", "teeth"):
        lines[top - thick : top, :] = 1  # the shared rules run on at the cut
        lines[bottom : bottom + thick, :] = 1
        wall_top = top - thick if box == "comb" else bottom - int(inner_h * rng.uniform(0.25, 0.5))
        for x in (left - thick, right):  # this box's walls, and the neighbours' beyond the cut
            lines[wall_top : bottom + thick, x : x + thick] = 1
        if box == "teeth":
            lines[top - thick : top, :] = rng.random() < 0.5  # some comb fields have no top rule
    elif box == "underline":
        lines[bottom : bottom + thick, :] = 1
    canvas = canvas * (1 - lines[..., None]) + line_rgb * lines[..., None]
    # Then the writing, anywhere in the box, maybe over its border.
    y = top + int(rng.integers(-max(1, gh // 6), max(2, inner_h - gh + gh // 6)))
    x = left + int(rng.integers(-max(1, gw // 6), max(2, inner_w - gw + gw // 6)))
    y, x = int(np.clip(y, 0, max(0, H - gh))), int(np.clip(x, 0, max(0, W - gw)))
    if rng.random() < 0.75:
        ink_rgb = np.array([rng.uniform(0, 70)] * 3)
    else:  # blue or blue-black ballpoint
        ink_rgb = np.array([rng.uniform(10, 40), rng.uniform(20, 60), rng.uniform(90, 150)])
    a = np.zeros((H, W), np.float32)
    ph, pw = min(gh, H - y), min(gw, W - x)
    a[y : y + ph, x : x + pw] = alpha[:ph, :pw]
    a *= rng.uniform(0.8, 1.0)
    canvas = canvas * (1 - a[..., None]) + ink_rgb * a[..., None]
    canvas += rng.normal(0, rng.uniform(0, 8), (H, W, 1))
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0) * max(unit, 0.6))))
    if rng.random() < 0.5:  # a scanned page is never quite straight
        img = img.rotate(float(rng.uniform(-2, 2)), resample=Image.Resampling.BILINEAR,
                         fillcolor=tuple(int(c) for c in paper))
    if line_rgb[0] == line_rgb[2] and ink_rgb[0] == ink_rgb[2] and rng.random() < 0.5:
        img = img.convert("L")  # a grey scanner
    buf = io.BytesIO()
    if rng.random() < 0.7:
        img.save(buf, "JPEG", quality=int(rng.integers(55, 96)))
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ populations


def form_cell(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """One 28x28 MNIST digit (bright on black) -> encoded image bytes of a form cell."""
    size = int(28 * rng.uniform(1.2, 5.0))
    alpha = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC),
                       dtype=np.float32) / 255.0
    height = size + int(rng.integers(6, size // 2 + 8))
    width = size + int(rng.integers(6, size + 8))
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    paper, ink = rng.uniform(190, 255), rng.uniform(0, 90)
    cell = np.full((height, width), paper, dtype=np.float32)
    region = cell[top : top + size, left : left + size]
    cell[top : top + size, left : left + size] = region - (region - ink) * alpha
    cell += rng.normal(0, rng.uniform(0, 10), cell.shape)
    gray = np.clip(cell, 0, 255).astype(np.uint8)
    mode = rng.choice(["L", "RGB", "P"])
    if mode == "RGB":  # slightly tinted paper and ink, as from a colour scanner
        tint = rng.uniform(0.9, 1.0, 3)
        image = Image.fromarray((gray[..., None] * tint).astype(np.uint8), "RGB")
    else:
        image = Image.fromarray(gray, "L")
    buf = io.BytesIO()
    if mode == "P":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(buf, "PNG")
    else:
        image.save(buf, "JPEG", quality=int(rng.integers(55, 95)))
    return buf.getvalue()


def form_cells(images: np.ndarray, seed: int = 0) -> list[bytes]:
    """Handwritten digits on plain paper (no box): any size, off-centre, tinted, JPEG."""
    rng = np.random.default_rng(seed)
    return [form_cell(d, rng) for d in images]




def boxed_cells(digits: np.ndarray, seed: int) -> list[bytes]:
    """Handwritten digits (MNIST, bright on black) each written in a printed box."""
    rng = np.random.default_rng(seed)
    return [compose(mnist_alpha(d, int(rng.uniform(20, 110))), rng,
                    str(rng.choice(BOX_STYLES[1:], p=[0.45, 0.3, 0.15, 0.1]))) for d in digits]


def printed_cells(fonts: Sequence[Font], n: int, seed: int, ones: str = "",
                  ones_share: float = 0.3) -> tuple[list[bytes], np.ndarray]:
    """``n`` machine-printed digits in the given fonts, any size; (cells, labels). With
    ``ones`` (training), ``ones_share`` of the 1s are drawn as one of those glyphs instead."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    cells = []
    for d in labels:
        text = str(d)
        if ones and d == 1 and rng.random() < ones_share:
            text = ones[rng.integers(0, len(ones))]
        cells.append(compose(text_alpha(text, fonts[rng.integers(0, len(fonts))],
                                        int(rng.uniform(14, 90)), rng), rng))
    return cells, labels


def negative_cells(fonts: Sequence[Font], digits: np.ndarray, n: int, seed: int,
                   letters: str = LETTERS) -> tuple[list[bytes], list[str]]:
    """``n`` cells that hold no digit; (cells, kind of each): letter, symbol, scribble,
    picture, crossed-out (over the given MNIST digits)."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["letter", "symbol", "scribble", "picture", "crossed-out"], n,
                       p=[0.35, 0.2, 0.15, 0.15, 0.15])
    cells = []
    for kind in kinds:
        size = int(rng.uniform(16, 90))
        if kind == "letter":
            alpha = text_alpha(letters[rng.integers(0, len(letters))],
                               fonts[rng.integers(0, len(fonts))], size, rng)
        elif kind == "symbol":
            alpha = text_alpha(SYMBOLS[rng.integers(0, len(SYMBOLS))],
                               fonts[rng.integers(0, len(fonts))], size, rng)
        elif kind == "scribble":
            alpha = scribble_alpha(size, rng)
        elif kind == "picture":
            alpha = picture_alpha(size, rng)
        else:
            alpha = crossed_out(mnist_alpha(digits[rng.integers(0, len(digits))], size), rng)
        cells.append(compose(alpha, rng))
    return cells, [str(k) for k in kinds]
