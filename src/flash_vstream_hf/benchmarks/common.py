"""Shared helpers: thread settings, RSS probes, timing, the synthetic feature stream and the real memory layout."""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..modeling import FlashVStreamConfig, StarLayout
from ..modeling.abstract_memory_attention import FlashVStreamAbstractMemoryAttention
from .sizes import MEMORY_LAYOUTS

MB = 1024 * 1024


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with `num_threads` intra-op threads, restoring the previous setting after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall times in seconds of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary_ms(seconds: list[float], per: int = 1) -> dict:
    """`ms_per_frame` as the median of `seconds / per` (the median resists bursts of load from other processes)
    and the samples, so a reader can see the spread."""
    samples = [s / per * 1e3 for s in seconds]
    return {"ms_per_frame": statistics.median(samples), "samples_ms": [round(x, 3) for x in samples]}


# -- resident memory ------------------------------------------------------------------------------------------

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def current_rss() -> int | None:
    """Resident set size of this process in bytes (None where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else None


def peak_rss() -> int | None:
    """Peak resident set size since the last `reset_peak_rss()` (or process start), in bytes."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: fall back to the process-lifetime peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return kb * 1024


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux `clear_refs` 5), so each measurement gets its own peak.
    Returns False where that is not possible; peaks are then process-lifetime peaks."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


# -- inputs ---------------------------------------------------------------------------------------------------


class SyntheticFeatureStream:
    """Deterministic stand-in for CLIP ViT-L/14 frame features: frame `i` is `[1, 1, g*g, D]`.

    Frame `i` mixes two of `bank_size` random frames, `cos(0.1 i) bank[i % n] + sin(0.1 i) bank[(7 i + 3) % n]`,
    so consecutive frames differ (k-means has real work) while the stream needs a fixed amount of memory and a
    frame costs two fused multiply-adds to make, not a random draw.
    """

    def __init__(self, grid_tokens: int, dim: int, bank_size: int = 64, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.bank = torch.randn(bank_size, grid_tokens, dim, generator=generator)  # [n, g*g, D]

    def frame(self, index: int) -> torch.Tensor:
        n = self.bank.shape[0]
        angle = 0.1 * index
        mixed = torch.add(self.bank[index % n] * math.cos(angle), self.bank[(7 * index + 3) % n], alpha=math.sin(angle))
        return mixed[None, None]  # [1, 1, g*g, D]

    def frames(self, start: int, count: int) -> torch.Tensor:
        """Frames `start .. start + count - 1` as one `[1, count, g*g, D]` tensor."""
        return torch.cat([self.frame(start + i) for i in range(count)], dim=1)


def released_layout(name: str = "released") -> tuple[FlashVStreamConfig, StarLayout]:
    """A memory config and its layout: the released model's (`FlashVStreamConfig()`: ViT-L/14 features, 681 memory
    tokens), or with `name="tiny"` the tiny test model's (`flash_vstream_hf.tiny`: 64-d features, 72 tokens)."""
    if name not in MEMORY_LAYOUTS:
        raise ValueError(f"memory layout must be one of {MEMORY_LAYOUTS}, got {name!r}")
    if name == "tiny":
        from ..tiny import tiny_config

        config = tiny_config()
    else:
        config = FlashVStreamConfig()
    return config, StarLayout.from_config(config)


def abstract_attention(config: FlashVStreamConfig, seed: int = 0) -> FlashVStreamAbstractMemoryAttention:
    """The model's learned abstract-memory attention (random weights), without building the 7B model."""
    torch.manual_seed(seed)
    return FlashVStreamAbstractMemoryAttention(config).eval()


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (processes wanting a core), None where unknown."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None
