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


def provider_chain(choice: str) -> list[str]:
    """onnxruntime's provider names for ``choice`` (cpu or cuda): CPU stays listed after CUDA
    so ops without a CUDA kernel still run."""
    return [ORT_PROVIDERS[choice]] + ([ORT_PROVIDERS["cpu"]] if choice == "cuda" else [])


def cuda_offered() -> bool:
    """Whether the installed onnxruntime offers its CUDA provider (False without onnxruntime:
    a client-only install, whose workers decide for themselves)."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return ORT_PROVIDERS["cuda"] in onnxruntime.get_available_providers()


def int8_native() -> bool | None:
    """Whether this CPU multiplies int8 vectors natively (x86's AVX-512 VNNI, ARM's dot
    product), as numpy's start-up feature detection found; None where numpy does not say.
    Without them onnxruntime's int8 kernels add pairs of products into 16 bits: slower than
    fp32 for the shipped model (README), and what the int8 file's 7-bit weights are for."""
    try:  # numpy's feature table: numpy._core from 2.0, numpy.core before
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return None
    if not features:
        return None
    return bool(features.get("AVX512VNNI") or features.get("ASIMDDP"))


def session_providers(names: list[str]) -> list:
    """onnxruntime's ``providers=`` argument for provider ``names``, with their options."""
    return [(n, dict(CUDA_PROVIDER_OPTIONS)) if n == ORT_PROVIDERS["cuda"] else n for n in names]


def check_device(value: str, what: str = "provider") -> str:
    if value not in DEVICES:
        raise ConfigError(f"Invalid {what} {value!r}. Use {', '.join(DEVICES[:-1])} or {DEVICES[-1]}.")
    return value
