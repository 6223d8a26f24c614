"""Devices and precisions: which ones exist here, and which precision is fast.

bf16 is only fast where the hardware does bf16 arithmetic: CUDA GPUs with
bf16 support, and CPUs with AVX-512-BF16 or AMX. On a CPU without them
(an AVX2-only AMD EPYC, say) PyTorch emulates bf16 matrix products, measured
at about 1 GFLOP/s against 165 for fp32, so ``precision="auto"`` picks fp32
there and an explicit ``bf16`` warns.
"""

from __future__ import annotations

import os
import platform
import re
import warnings
from functools import lru_cache


PRECISIONS = ("auto", "fp32", "bf16")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


class PrecisionWarning(UserWarning):
    """A precision was asked for that is slow on this hardware."""


def validate_device(device: str) -> str:
    """``device`` if this machine has it; ValueError (naming ``--device``) if not."""
    d = str(device).strip().lower()
    if not _DEVICE.match(d):
        raise ValueError(f"--device {device}: unknown device; use cpu, cuda or cuda:N (or mps on "
                         f"Apple silicon)")
    if d == "cpu":  # without importing torch: a usage error later stays quick
        return d
    import torch

    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine "
                             f"(this torch build: {torch.__version__})")
        index = int(d.split(":")[1]) if ":" in d else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s)")
    if d == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: MPS (Apple silicon GPU) is not available on this machine")
    return d


@lru_cache(maxsize=None)
def cpu_bf16_native() -> tuple[bool, str]:
    """(whether this CPU does bf16 arithmetic natively, why we think so)."""
    import torch

    checks = []
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, name, None)
        if fn is not None:
            try:
                if fn():
                    return True, f"torch.cpu.{name}() is true"
                checks.append(f"torch.cpu.{name}() is false")
            except Exception:  # noqa: BLE001 - a probe must never stop a run
                pass
    flags = _cpu_flags()
    if {"avx512_bf16", "amx_bf16"} & flags:
        return True, "the CPU flags include " + ", ".join(sorted({"avx512_bf16", "amx_bf16"} & flags))
    if platform.machine().lower() in ("arm64", "aarch64") and "bf16" in flags:
        return True, "the CPU flags include bf16"
    return False, "; ".join(checks) or "no native bf16 instructions found"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("flags", "features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_info() -> dict:
    """The CPU beside every benchmark figure: model name, torch's capability
    level, native bf16, cores."""
    import torch

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        capability = "unknown"
    native, why = cpu_bf16_native()
    return {"cpu_model": name, "cpu_capability": capability, "cpu_bf16_native": native,
            "cpu_bf16_reason": why, "cpu_count": os.cpu_count()}


def resolve_precision(precision: str, device: str = "cpu", warn: bool = True) -> str:
    """``auto`` -> bf16 where bf16 is fast (CUDA with bf16 support; a CPU
    with native bf16), else fp32. An explicit ``bf16`` on a CPU without
    native bf16 is kept, with a :class:`PrecisionWarning` saying why it is slow."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    dev = str(device)
    if precision == "auto":
        if dev.startswith("cuda"):
            return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
        if dev == "cpu":
            return "bf16" if cpu_bf16_native()[0] else "fp32"
        return "fp32"
    if precision == "bf16" and dev == "cpu" and warn:
        native, why = cpu_bf16_native()
        if not native:
            warnings.warn(f"--precision bf16 on a CPU without native bf16 ({why}): PyTorch emulates "
                          f"it, many times slower than fp32; use --precision auto or fp32",
                          PrecisionWarning, stacklevel=2)
    return precision
