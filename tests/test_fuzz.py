"""Fuzz decode-and-normalise: bounded iterations, any input ends in a digit array or an
ImageError, never another exception, never a hang."""

import io
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitscan.errors import ImageError
from digitscan.worker.imaging import prepare
from digitscan.worker.settings import Limits

LIMITS = Limits(max_pixels=4_000_000, timeout_s=5.0)
FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8))
    out = []
    for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 80}), ("BMP", {}), ("TIFF", {}),
                    ("GIF", {}), ("WEBP", {}), ("PPM", {})):
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


SEEDS = seeds()


def outcome(data: bytes) -> None:
    t0 = time.perf_counter()
    try:
        digit = prepare(data, LIMITS)
    except ImageError:
        pass
    else:
        assert digit.shape == (28, 28) and digit.dtype == np.uint8
    # A hang, not a slow machine, is what this catches: the 5 s bound plus ample slack.
    assert time.perf_counter() - t0 < 30


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    outcome(data)


@FUZZ
@given(seed=st.sampled_from(range(len(SEEDS))),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
       cut=st.integers(0, 10_000))
def test_mutated_real_images(seed, flips, cut):
    data = bytearray(SEEDS[seed])
    for position, value in flips:
        data[position % len(data)] = value
    outcome(bytes(data[: max(1, len(data) - cut % len(data))]))


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_fuzz_seeds_are_valid_images(seed):
    assert prepare(SEEDS[seed], LIMITS).shape == (28, 28)
