"""Where a model runs: one list of choices for training devices and onnxruntime providers."""

from __future__ import annotations

from digitscan.errors import ConfigError

# auto: CUDA when available, else the CPU. An explicit cuda never falls back.
DEVICES = ("auto", "cpu", "cuda")


def check_device(value: str, what: str = "provider") -> str:
    if value not in DEVICES:
        raise ConfigError(f"Invalid {what} {value!r}. Use {', '.join(DEVICES[:-1])} or {DEVICES[-1]}.")
    return value
