"""What every benchmark prints beside its figures: the CPU it ran on.

Speed figures mean little without the processor and its vector extensions (AVX2 only, or
AVX-512 with BF16 and AMX), so each ``bench_*.py`` prints :func:`describe_cpu` with them.
"""
from __future__ import annotations

import os

#: The instruction-set flags that change how fast our kernels run, in /proc/cpuinfo spelling.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def describe_cpu() -> str:
    """``"<model name>; <n> logical CPUs; avx2 fma avx512f ..."`` from /proc/cpuinfo (Linux)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = [f for f in SIMD_FLAGS if f in flags]
    return f"{model}; {os.cpu_count()} logical CPUs; {' '.join(have) or 'no AVX2'}"
