"""What the benchmark ran on: CPU, cores, memory, load, library versions and measured matmul throughput."""

from __future__ import annotations

import os
import platform
import time

import torch

from .common import cpu_model_name, load_average


def matmul_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` throughput of a `[size, 4 size] x [4 size, size]` matmul in `dtype` (GFLOP/s)."""
    a = torch.randn(size, 4 * size).to(dtype)
    b = torch.randn(4 * size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size * 4 * size * size / best / 1e9


def machine_info(threads: int, quick: bool = False) -> dict:
    """Machine description; `quick` measures a smaller fp32 matmul and skips the (slow) bf16 one."""
    import transformers

    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    with torch.no_grad():
        fp32 = matmul_gflops(torch.float32, size=512 if quick else 1024)
        # bf16 is measured small: without native bf16 units (AVX512-BF16/AMX) it can be ~100x slower than fp32.
        bf16 = None if quick else matmul_gflops(torch.bfloat16, size=256, repeats=2)
    return {
        "cpu": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "memory_gib": None if memory_gib is None else round(memory_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": threads,
        "load_average_start": load_average(),  # 1, 5 and 15 minute averages
        "matmul_gflops_fp32": round(fp32, 1),
        "matmul_gflops_bf16": None if bf16 is None else round(bf16, 2),
    }
