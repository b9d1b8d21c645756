"""Memory files: a STAR state in a safetensors file, written atomically and checked in full when read.

A memory file is user data that may come from elsewhere, so reading one trusts nothing: the format and version,
the layout, every tensor's name, shape, dtype and batch, the frame counter, the k-means generator state and the
values themselves are checked before a state is built. How the file is written (atomically, synced, with the
umask's mode) and read (nothing executed) is `safetensors_file`, shared with v2's memory.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from .safetensors_file import read_tensors, write_atomically
from .star_memory import StarLayout, StarState, empty_state

FILE_FORMAT = "flash_vstream_memory"
FILE_VERSION = "1"
# frames_seen only sets how many memory entries are filled; beyond 2**53 it would not survive a float round trip
MAX_FRAMES_SEEN = 2**53


def save_memory_file(path: str | os.PathLike, layout: StarLayout, state: StarState) -> None:
    """Write `state` to `path` atomically (see `safetensors_file.write_atomically`)."""
    metadata = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "frames_seen": str(state.frames_seen),
        "layout": json.dumps(layout.to_dict()),
    }
    write_atomically(path, state.tensors(), metadata)


def load_memory_file(path: str | os.PathLike) -> tuple[StarLayout, StarState]:
    """Read and check a file written by `save_memory_file`; a `ValueError` names the first thing that is wrong."""
    metadata, tensors = read_tensors(path)
    try:
        if metadata.get("format") != FILE_FORMAT:
            raise ValueError(f"it is not a Flash-VStream memory file (format {metadata.get('format')!r})")
        if metadata.get("version") != FILE_VERSION:
            raise ValueError(f"it has memory format version {metadata.get('version')!r}, expected {FILE_VERSION}")
        layout = _read_layout(metadata.get("layout"))
        state = StarState(
            frames_seen=_read_frames_seen(metadata.get("frames_seen")), **_checked_tensors(tensors, layout)
        )
        _check_counts(state, layout)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return layout, state


def _read_layout(text: str | None) -> StarLayout:
    try:
        values = json.loads(text)
        layout = StarLayout(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"its layout is not a STAR memory layout: {error}") from error
    for field in dataclasses.fields(StarLayout):
        value = getattr(layout, field.name)
        kind = {"int": int, "float": (int, float), "str": str}[str(field.type)]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"its layout field {field.name} is {value!r}, not a {field.type}")
    for field in ("spatial_pool_size", "temporal_pool_size", "abstract_pool_size", "feature_size", "patch_grid_size"):
        if getattr(layout, field) < 1:
            raise ValueError(f"its layout field {field} must be >= 1, got {getattr(layout, field)}")
    for field in ("spatial_length", "temporal_length", "abstract_length", "retrieved_length"):
        if getattr(layout, field) < 0:
            raise ValueError(f"its layout field {field} must be >= 0, got {getattr(layout, field)}")
    return layout


def _read_frames_seen(text: str | None) -> int:
    if text is None or not text.isdigit() or int(text) > MAX_FRAMES_SEEN:
        raise ValueError(f"frames_seen must be an integer >= 0 and <= {MAX_FRAMES_SEEN}, got {text!r}")
    return int(text)


def _checked_tensors(tensors: dict[str, torch.Tensor], layout: StarLayout) -> dict[str, torch.Tensor]:
    """The tensors of a state for `layout`, each checked for name, shape, dtype, batch and values."""
    current = tensors.get("current")
    if current is None or current.dim() != 4 or not current.is_floating_point():
        raise ValueError("it lacks a floating-point [batch, ...] tensor 'current'")
    batch = current.shape[0]
    expected = empty_state(layout, max(batch, 1), "meta", current.dtype).tensors()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing:
        raise ValueError(f"it lacks memory tensors {missing}")
    if extra:
        raise ValueError(f"it holds unexpected tensors {extra}")
    for name, reference in expected.items():
        tensor = tensors[name]
        if name == "generator_state":
            _check_generator_state(tensor)
            continue
        if tensor.dtype != reference.dtype:
            raise ValueError(f"tensor {name} has dtype {tensor.dtype}, the memory needs {reference.dtype}")
        if tensor.dim() == reference.dim() and tensor.shape[0] != batch:
            raise ValueError(f"tensor {name} holds {tensor.shape[0]} streams but current holds {batch}")
        if tensor.shape != reference.shape:
            raise ValueError(
                f"tensor {name} has shape {tuple(tensor.shape)}, the layout needs {tuple(reference.shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"tensor {name} holds NaN or inf values")
    if (tensors["temporal_sizes"] < 0).any():
        raise ValueError("temporal_sizes must be >= 0 (they count the frames of each temporal cluster)")
    return tensors


def _check_counts(state: StarState, layout: StarLayout) -> None:
    """`frames_seen` must be what the tensors hold: the temporal sizes of every stream add up to the frames that
    left the spatial window (each is a frame of size 1 until clustering starts), and entries past the filled
    ones were never written. Sizes are float32 sums of whole numbers: exact up to 2**24 frames, then within
    float32 rounding. (A layout without a temporal memory holds no count once its other memories are full.)"""
    counts = layout.counts(state.frames_seen)
    told = f"frames_seen says {state.frames_seen} but"
    sizes = state.temporal_sizes.double()  # [B, N_tem]
    if layout.temporal_length > 0:
        totals = sizes.sum(-1)
        tolerance = 0.5 if counts.past < 2**24 else counts.past * 2**-20
        if ((totals - counts.past).abs() > tolerance).any():
            held = ", ".join(f"{total:.0f}" for total in totals.tolist())
            raise ValueError(
                f"{told} temporal_sizes count {held} frames past the spatial window ({counts.past} expected)"
            )
        if counts.past <= layout.temporal_length and not (sizes[:, : counts.temporal] == 1).all():
            raise ValueError(f"{told} temporal_sizes are not the single frames {counts.temporal} frames make")
        if (sizes[:, counts.temporal :] != 0).any():
            raise ValueError(f"{told} temporal_sizes has entries past its {counts.temporal} filled ones")
    filled = {"current": counts.current, "temporal": counts.temporal, "abstract": counts.abstract,
              "key_frames": counts.temporal}  # fmt: skip
    for name, count in filled.items():
        if getattr(state, name)[:, count:].any():
            raise ValueError(f"{told} {name} holds values past its {count} filled entries")


def _check_generator_state(tensor: torch.Tensor) -> None:
    try:
        torch.Generator().set_state(tensor)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"generator_state is not a k-means generator state: {error}") from error


__all__ = ["FILE_FORMAT", "FILE_VERSION", "load_memory_file", "save_memory_file"]
