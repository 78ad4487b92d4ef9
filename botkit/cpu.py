"""What this CPU can do natively, read once from ``/proc/cpuinfo`` (Linux x86).

Machines botkit runs on differ: an Intel Xeon with AVX-512, VNNI, AVX512-BF16 and AMX, or an
AMD EPYC Zen 3 with AVX2 only. On the latter bf16 arithmetic is emulated (many times slower
than fp32 in training) and int8 kernels saturate without VNNI, so dtypes and numeric
expectations must be chosen from these flags, never assumed.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_native_bf16() -> bool:
    """bf16 matrix arithmetic in hardware (AVX512-BF16 or AMX-BF16); elsewhere it is emulated."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def has_vnni() -> bool:
    """int8 dot products in hardware (AVX512-VNNI or AVX-VNNI): int8 kernels do not saturate."""
    flags = cpu_flags()
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


def describe() -> str:
    """One line for logs and benchmark output, e.g. ``AMD EPYC, x86_64, avx2 (no avx512, no vnni)``."""
    flags = cpu_flags()
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    feats = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    missing = [f for f in ("avx512f", "vnni", "bf16") if not any(f in g for g in flags)]
    tail = f" (no {', no '.join(missing)})" if missing else ""
    return f"{name or platform.processor() or 'unknown CPU'}, {platform.machine()}, {' '.join(feats) or 'no AVX'}{tail}"


__all__ = ["cpu_flags", "describe", "has_native_bf16", "has_vnni"]
