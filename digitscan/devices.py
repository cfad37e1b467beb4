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


def _cpu_features() -> dict | None:
    """numpy's start-up feature detection of this CPU; None where numpy does not say."""
    try:  # numpy's feature table: numpy._core from 2.0, numpy.core before
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return None
    return features or None


def int8_native() -> bool | None:
    """Whether this CPU multiplies int8 vectors natively (x86's AVX-512 VNNI, ARM's dot
    product); None where numpy does not say. Without them onnxruntime's int8 kernels add
    pairs of products into 16 bits, what the int8 file's 7-bit weights are for."""
    features = _cpu_features()
    if features is None:
        return None
    return bool(features.get("AVX512VNNI") or features.get("ASIMDDP"))


def int8_pays() -> bool | None:
    """Whether the shipped int8 file runs faster than fp32 here: where int8 is native, and
    on x86 with AVX2. The AVX2 half was measured on an AVX2-only EPYC (Zen 3, 2026-11-28,
    whole scans in alternating pairs: 10,000 form cells 4.81 -> 4.57 s, int8 ahead in 6 of
    6 pairs; 60,000 MNIST PNGs 3 of 3) once the int8 file kept its full-resolution
    depthwise layer in fp32; with the file before, fp32 was ahead on such a CPU (README).
    None where numpy does not say; False elsewhere (no data: fp32)."""
    features = _cpu_features()
    if features is None:
        return None
    return bool(int8_native() or features.get("AVX2"))


def session_providers(names: list[str]) -> list:
    """onnxruntime's ``providers=`` argument for provider ``names``, with their options."""
    return [(n, dict(CUDA_PROVIDER_OPTIONS)) if n == ORT_PROVIDERS["cuda"] else n for n in names]


def check_device(value: str, what: str = "provider") -> str:
    if value not in DEVICES:
        raise ConfigError(f"Invalid {what} {value!r}. Use {', '.join(DEVICES[:-1])} or {DEVICES[-1]}.")
    return value
