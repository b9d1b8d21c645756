"""How many tokens a STAR memory gives the language model after `T` frames: the one definition of the count.

Standard library only, so both sides import it in both layouts: the processor (to expand `<video>`) from its own
folder, and the model's `StarLayout` (`modeling/star_memory.py`) from here in the package or from the same folder
in a flat Hub bundle. Counts follow the released code (docs/original_model.md, "Token order and counts").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# The config fields the count depends on (`FlashVStreamConfig` / `StarLayout` names, see docs/glossary.md).
TOKEN_FIELDS = (
    "spatial_pool_size", "temporal_pool_size", "abstract_pool_size", "spatial_length",
    "temporal_length", "abstract_length", "retrieved_length",
)  # fmt: skip


@dataclass(frozen=True)
class MemoryCounts:
    current: int  # frames in the spatial window (the spatial memory, `StarState.current`)
    past: int  # frames that left the window
    temporal: int  # filled temporal entries (frames, then centroids)
    abstract: int  # filled abstract entries
    pending: int  # frames of the abstract chunk not applied yet
    retrieved: int  # key frames in the read-out


def memory_counts(layout, frames_seen: int) -> MemoryCounts:
    """How many entries of each memory are filled after `frames_seen` frames; `layout` has the `TOKEN_FIELDS`."""
    current = min(frames_seen, layout.spatial_length)
    past = frames_seen - current  # frames that left the spatial window (L in docs/original_model.md)
    temporal = min(past, layout.temporal_length)
    abstract = min(past, layout.abstract_length)
    overflow = past - layout.abstract_length
    pending = overflow % layout.abstract_length if overflow > 0 and layout.abstract_length else 0
    return MemoryCounts(current, past, temporal, abstract, pending, min(layout.retrieved_length, temporal))


def memory_tokens(layout, frames_seen: int) -> int:
    """Memory tokens the language model sees after `frames_seen` frames, `[abstract | temporal | retrieved |
    current]`; `layout` has the `TOKEN_FIELDS`.

    With the released config: 64 for one frame, `17 L + 64 min(3, L) + 64` for `L = T - 1` up to 25, and 681
    from 26 frames on.
    """
    n = memory_counts(layout, frames_seen)
    return (
        n.abstract * layout.abstract_pool_size**2
        + n.temporal * layout.temporal_pool_size**2
        + (n.retrieved + n.current) * layout.spatial_pool_size**2
    )


@dataclass(frozen=True)
class TokenLayout:
    """The `TOKEN_FIELDS` of a model config, what the processor holds to count `<video>` tokens (defaults: the
    released values)."""

    spatial_pool_size: int = 8
    temporal_pool_size: int = 4
    abstract_pool_size: int = 1
    spatial_length: int = 1
    temporal_length: int = 25
    abstract_length: int = 25
    retrieved_length: int = 3

    @classmethod
    def from_config(cls, config) -> TokenLayout:
        """The fields of `config` (a `FlashVStreamConfig`, a `StarLayout` or anything holding them)."""
        return cls(**{name: getattr(config, name) for name in TOKEN_FIELDS})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def counts(self, frames_seen: int) -> MemoryCounts:
        return memory_counts(self, frames_seen)

    def num_tokens(self, frames_seen: int) -> int:
        return memory_tokens(self, frames_seen)


__all__ = ["MemoryCounts", "TOKEN_FIELDS", "TokenLayout", "memory_counts", "memory_tokens"]
