"""Memory update cost per frame and peak RSS vs frames seen, without the vision encoder.

STAR memory and the recent window are streamed frame by frame through every checkpoint (100,000 frames in the
full run). STAR's state at each checkpoint is saved; after the stream, the next `CYCLE` frames (one abstract-memory
chunk, so its update is amortised) are timed from every saved state in `repeats` rounds whose order alternates,
and the median is kept: identical work at every size, timed under the same conditions. The released algorithm's
state is its frame buffer, so it is built directly at each size and one frame's update (append + offline
re-consolidation of all frames) is timed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ..modeling import FlashVStreamMemory
from ..modeling.star_memory import consolidate, empty_state, pool_spatial
from .baselines import RecentWindow, released_kmeans_bytes, released_update
from .common import (
    MB,
    SyntheticFeatureStream,
    abstract_attention,
    current_rss,
    peak_rss,
    released_layout,
    reset_peak_rss,
    summary_ms,
    time_calls,
    torch_threads,
)
from .progress import progress
from .sizes import Sizes

CYCLE = 25  # frames timed per checkpoint: one abstract chunk of the released layout


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def measure_update_cost(
    sizes: Sizes,
    memory_threads: int,
    memory_dtype: torch.dtype,
    original_max_bytes: int,
    log: Callable[[str], None],
    layout_name: str = "released",
) -> dict:
    """Rows `{method, frames_seen, ms_per_frame, peak_rss_mb, state_mb}` for STAR, recent window and released,
    with the released model's memory layout or (`layout_name="tiny"`) the tiny test model's."""
    config, layout = released_layout(layout_name)
    attention = abstract_attention(config)
    stream = SyntheticFeatureStream(layout.patch_grid_size**2, layout.feature_size)
    per_measurement_peaks = reset_peak_rss()
    with torch.no_grad(), torch_threads(memory_threads):
        with tempfile.TemporaryDirectory() as scratch:
            rows = _stream_star_and_window(layout, attention, stream, sizes, memory_dtype, log, scratch)
        rows += _released(layout, attention, stream, sizes, original_max_bytes, log)
    return {
        "rows": rows,
        "layout": layout.to_dict(),
        "layout_name": layout_name,
        "memory_dtype": str(memory_dtype).removeprefix("torch."),
        "memory_threads": memory_threads,
        "cycle_frames": CYCLE,
        "peak_rss_per_measurement": per_measurement_peaks,
    }


def _apply(step, state, frames: list[torch.Tensor]):
    """The state after adding `frames` one by one (states are immutable: `state` itself is unchanged)."""
    for features in frames:
        state = step(state, features)
    return state


def _seconds_to_apply(step, state, frames: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    _apply(step, state, frames)
    return time.perf_counter() - start


def _add_all(window: RecentWindow, frames: list[torch.Tensor]) -> None:
    for features in frames:
        window.add(features)


def _frames_streamed(checkpoints: tuple[int, ...]) -> int:
    """Frames the STAR state sees in `_stream_star_and_window`: up to each checkpoint, then its timed cycle."""
    seen = 0
    for checkpoint in checkpoints:
        seen = max(seen, checkpoint) + CYCLE
    return seen


def _stream_star_and_window(layout, attention, stream, sizes, dtype, log, scratch: str) -> list[dict]:
    def step(state, features):
        return consolidate(state, layout, pool_spatial(features, layout.spatial_pool_size), attention)

    window = RecentWindow(layout, layout.num_tokens(layout.temporal_length + 2))
    state = empty_state(layout, 1, "cpu", dtype)
    reset_peak_rss()
    rows, checkpoints = [], []
    streaming = progress(total=_frames_streamed(sizes.update_frames), desc="Streaming STAR + window", unit="frame")
    for checkpoint in sizes.update_frames:
        while state.frames_seen < checkpoint:
            features = stream.frame(state.frames_seen)
            state = step(state, features)
            window.add(features)
            streaming.update()
        cycle = [stream.frame(checkpoint + i) for i in range(CYCLE)]
        # Saved to disk rather than kept in RAM (and the cycle made again later), so the peak RSS measured while
        # streaming holds one state only.
        saved = Path(scratch) / f"{checkpoint}.safetensors"
        FlashVStreamMemory(layout, state).save(saved)
        checkpoints.append((checkpoint, saved))
        state = _apply(step, state, cycle)
        streaming.update(CYCLE)
        window_seconds = time_calls(partial(_add_all, window, cycle), sizes.update_repeats)
        star_row = {
            "method": "star",
            "frames_seen": checkpoint,
            "peak_rss_mb": _mb(peak_rss()),
            "rss_mb": _mb(current_rss()),
            "state_mb": _mb(state.nbytes),  # fixed by the layout
        }
        window_bytes = sum(t.numel() * t.element_size() for t in window.frames)
        window_row = {
            "method": "window",
            "frames_seen": checkpoint,
            **summary_ms(window_seconds, CYCLE),
            "peak_rss_mb": None,  # streamed in the same process as STAR: its peak is STAR's
            "state_mb": _mb(window_bytes),
        }
        rows += [star_row, window_row]
        log(f"  STAR at {checkpoint:,} frames: peak {star_row['peak_rss_mb']} MB")
    streaming.close()

    # STAR's update is timed only now, from every checkpoint's saved state in rounds whose order alternates, so a
    # drift over the run (allocator warm-up, clocks, other processes) does not land on the small or large sizes.
    # A static scene (the same frame again and again) is k-means' worst case: duplicate points leave clusters
    # empty, they are re-seeded and it runs all its iterations.
    star_seconds = {checkpoint: [] for checkpoint, _ in checkpoints}
    static_seconds = {checkpoint: [] for checkpoint, _ in checkpoints}
    saved_states = {checkpoint: FlashVStreamMemory.load(path).state for checkpoint, path in checkpoints}
    cycles = {checkpoint: [stream.frame(checkpoint + i) for i in range(CYCLE)] for checkpoint, _ in checkpoints}
    timing = progress(total=sizes.update_repeats * len(checkpoints), desc="Timing STAR updates", unit="size")
    for round_index in range(sizes.update_repeats):
        for checkpoint, _ in checkpoints if round_index % 2 == 0 else checkpoints[::-1]:
            saved, cycle = saved_states[checkpoint], cycles[checkpoint]
            star_seconds[checkpoint].append(_seconds_to_apply(step, saved, cycle))
            static_seconds[checkpoint].append(_seconds_to_apply(step, saved, [cycle[0]] * CYCLE))
            timing.update()
    timing.close()
    for row in rows:
        if row["method"] == "star":
            checkpoint = row["frames_seen"]
            row.update(summary_ms(star_seconds[checkpoint], CYCLE))
            row["static_ms_per_frame"] = summary_ms(static_seconds[checkpoint], CYCLE)["ms_per_frame"]
            log(f"  STAR at {checkpoint:,} frames: {row['ms_per_frame']:.2f} ms/frame")
    return rows


def _released(layout, attention, stream, sizes, max_bytes, log) -> list[dict]:
    generator = torch.Generator().manual_seed(layout.memory_seed)
    buffer = torch.zeros(0, layout.spatial_tokens, layout.feature_size, dtype=torch.float16)
    reset_peak_rss()
    rows = []
    for checkpoint in progress(sorted(sizes.original_frames), desc="Released algorithm", unit="size"):
        # The released k-means holds two [T, K, F] fp16 tensors at once ((x - c) and its square).
        needed = 2 * released_kmeans_bytes(checkpoint + 1, layout)
        if needed > max_bytes:
            rows.append(
                {
                    "method": "original",
                    "frames_seen": checkpoint,
                    "ms_per_frame": None,
                    "peak_rss_mb": None,
                    "state_mb": _mb(buffer.element_size() * checkpoint * layout.spatial_tokens * layout.feature_size),
                    "note": f"not run: its k-means needs {needed / 2**30:.1f} GiB (> --original-max-gb)",
                }
            )
            log(f"  original at {checkpoint:,} frames: skipped ({rows[-1]['note']})")
            continue
        while buffer.shape[0] < checkpoint:  # the buffer holds every frame seen, 8x8-pooled, fp16
            count = min(100, checkpoint - buffer.shape[0])
            pooled = pool_spatial(stream.frames(buffer.shape[0], count), layout.spatial_pool_size)[0]
            buffer = torch.cat([buffer, pooled.to(buffer.dtype)])
        frame = pool_spatial(stream.frame(checkpoint), layout.spatial_pool_size)[0, 0]
        update = partial(released_update, buffer, frame, layout, attention, generator)
        seconds = time_calls(update, sizes.original_repeats)
        rows.append(
            {
                "method": "original",
                "frames_seen": checkpoint,
                **summary_ms(seconds),
                "peak_rss_mb": _mb(peak_rss()),
                "state_mb": _mb(buffer.numel() * buffer.element_size()),
            }
        )
        row = rows[-1]
        log(f"  original at {checkpoint:,} frames: {row['ms_per_frame']:.1f} ms/frame, peak {row['peak_rss_mb']} MB")
    return rows
