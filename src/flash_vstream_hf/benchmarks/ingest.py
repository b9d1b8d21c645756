"""Ingest throughput: frames through the ViT-L/14-shaped vision tower and into the STAR memory.

Frames are random preprocessed pixel tensors (`[1, T, 3, 224, 224]`; decoding and resizing are not included).
The memory is warmed up past its first `temporal_length + 1` frames so every update runs k-means. A frame's
ingest time is the vision tower (`get_frame_features`) plus the consolidation (`update_memory_from_features`);
consolidation is timed at the vision tower's thread count and at `memory_threads`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .common import SyntheticFeatureStream, torch_threads
from .models import vision_flops
from .progress import progress
from .sizes import Sizes


def _row(label: str, frames: int, batch: int, vision: float, memory: float, threads: int, memory_threads: int) -> dict:
    total = vision + memory
    return {
        "setting": label,
        "frames": frames,
        "batch": batch,
        "threads": threads,
        "memory_threads": memory_threads,
        "vision_ms_per_frame": vision / frames * 1e3,
        "memory_ms_per_frame": memory / frames * 1e3,
        "consolidation_share": memory / total,
        "fps": frames / total,
    }


def _timed_ingest(model, pixels: torch.Tensor, memory, memory_threads: int):
    """Ingest `pixels` `[1, T, 3, H, W]`: returns `((vision seconds, consolidation seconds), memory)`."""
    start = time.perf_counter()
    features = model.get_frame_features(pixels)
    middle = time.perf_counter()
    with torch_threads(memory_threads):
        memory = model.update_memory_from_features(features, memory)
    return (middle - start, time.perf_counter() - middle), memory


def measure_ingest(model, sizes: Sizes, threads: int, memory_threads: int, log: Callable[[str], None]) -> dict:
    config, layout = model.config, model.star_layout
    size = config.vision_config.image_size
    count = max(sizes.ingest_frames, sizes.ingest_batch)
    pixels = torch.randn(1, count, 3, size, size, generator=torch.Generator().manual_seed(0))
    stream = SyntheticFeatureStream(layout.patch_grid_size**2, layout.feature_size)
    rows = []
    timing = progress(total=2 * sizes.ingest_frames + sizes.ingest_batch, desc="Ingest", unit="frame")
    with torch.inference_mode(), torch_threads(threads):
        warm = stream.frames(0, layout.temporal_length + layout.spatial_length + 4)
        memory = model.update_memory_from_features(warm)
        model.get_frame_features(pixels[:, :1])  # warm-up

        for label, consolidation_threads in (
            (f"1 frame per call, memory at {threads} threads", threads),
            (f"1 frame per call, memory at {memory_threads} thread(s)", memory_threads),
        ):
            vision = consolidation = 0.0
            for index in range(sizes.ingest_frames):
                seconds, memory = _timed_ingest(model, pixels[:, index : index + 1], memory, consolidation_threads)
                vision, consolidation = vision + seconds[0], consolidation + seconds[1]
                timing.update()
            rows.append(_row(label, sizes.ingest_frames, 1, vision, consolidation, threads, consolidation_threads))
            log(f"  ingest ({label}): {rows[-1]['fps']:.2f} frames/s")

        (vision, consolidation), memory = _timed_ingest(model, pixels[:, : sizes.ingest_batch], memory, memory_threads)
        timing.update(sizes.ingest_batch)
        timing.close()
        label = f"{sizes.ingest_batch} queued frames per call, memory at {memory_threads} thread(s)"
        rows.append(_row(label, sizes.ingest_batch, sizes.ingest_batch, vision, consolidation, threads, memory_threads))
        log(f"  ingest ({label}): {rows[-1]['fps']:.2f} frames/s")
    return {
        "rows": rows,
        "vision_layers": config.vision_config.num_hidden_layers,
        "vision_gflop_per_frame": vision_flops(config) / 1e9,
        "frames_seen_at_end": memory.frames_seen,
    }
