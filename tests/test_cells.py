"""The population generators: fonts kept apart, every cell decodable, deterministic."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from digitscan.trainer import cells


def test_fonts_are_split_by_whole_family_and_cover_every_style():
    train, test = cells.split_fonts()
    assert len(train) >= 200 and len(test) >= 30
    assert not {f.family for f in train} & {f.family for f in test}
    assert not {f.path for f in train} & {f.path for f in test}
    styles = " ".join(f"{f.family} {f.style}" for f in test).lower()
    for needed in ("bold", "italic", "mono", "comic", "garamond", "sans"):
        assert needed in styles, needed


def test_every_font_draws_ten_different_digits():
    for font in cells.system_fonts()[::25]:
        f = cells._font(font.path, 40)
        assert len({bytes(f.getmask(str(d))) for d in range(10)}) == 10, font


def test_populations_are_deterministic_and_decodable(mnist):
    _, test = cells.split_fonts()
    a, la = cells.printed_cells(test, 20, seed=5)
    b, lb = cells.printed_cells(test, 20, seed=5)
    assert a == b and (la == lb).all()
    boxed = cells.boxed_cells(mnist.test_images[:10], seed=1)
    negatives, kinds = cells.negative_cells(test, mnist.test_images, 30, seed=2)
    assert set(kinds) <= {"letter", "symbol", "scribble", "picture", "crossed-out"}
    for data in a + boxed + negatives:
        image = Image.open(io.BytesIO(data))
        assert image.format in ("JPEG", "PNG") and min(image.size) >= 8
        assert np.asarray(image.convert("L")).std() > 5  # something is written there


def test_training_can_draw_printed_ones_as_a_serif_I_or_an_l():
    _, test = cells.split_fonts()
    plain, labels = cells.printed_cells(test, 60, seed=5)
    shaped, same_labels = cells.printed_cells(test, 60, seed=5, ones=cells.ONE_SHAPES, ones_share=1.0)
    assert (labels == same_labels).all() and (labels == 1).any()
    first = int(np.flatnonzero(labels == 1)[0])
    # Without ``ones`` nothing is drawn differently (the test populations stay as they were);
    # with it, the first 1 is another glyph.
    assert shaped[:first] == plain[:first] and shaped[first] != plain[first]
