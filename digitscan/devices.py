"""Where a model runs: one list of choices for training devices and onnxruntime providers."""

from __future__ import annotations

from digitscan.errors import ConfigError

# auto: CUDA when available, else the CPU. An explicit cuda never falls back.
DEVICES = ("auto", "cpu", "cuda")


ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# onnxruntime's CUDA provider computes float32 convolutions in TF32 by default (10-bit
# mantissa): measured on an H200, probabilities then differ from the CPU provider's by up to
# 8.5e-4 and 1 image in 10,000 changes its answer; with TF32 off, 1.2e-6 and none.
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0"}


def session_providers(names: list[str]) -> list:
    """onnxruntime's ``providers=`` argument for provider ``names``, with their options."""
    return [(n, dict(CUDA_PROVIDER_OPTIONS)) if n == ORT_PROVIDERS["cuda"] else n for n in names]


def check_device(value: str, what: str = "provider") -> str:
    if value not in DEVICES:
        raise ConfigError(f"Invalid {what} {value!r}. Use {', '.join(DEVICES[:-1])} or {DEVICES[-1]}.")
    return value
