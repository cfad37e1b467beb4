"""The cell cleanup's hot steps in C (worker/_cleanup.c): 2-7x the numpy/OpenCV versions they
are held to, pixel for pixel (tests/test_imaging.py). Everything else about the package is in
pyproject.toml; this file only declares the extension, which setuptools' pyproject table for
extensions still calls experimental.

Optional: where no C compiler is found, pip installs without it and the numpy/OpenCV
versions run (digitscan.worker.imaging.COMPILED says which; each worker logs a warning).
-ffp-contract=off: the rule search's centre line must round as numpy's arithmetic does.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("digitscan.worker._cleanup", ["worker/_cleanup.c"],
                             extra_compile_args=["-ffp-contract=off"], optional=True)])
