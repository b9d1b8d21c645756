"""Writing a state dict as sharded safetensors while it streams in, so it is never all in memory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers.utils.hub import convert_file_size_to_int

INDEX_NAME = "model.safetensors.index.json"


class ShardedSafetensorsWriter:
    """Collects tensors and writes a shard whenever the next tensor would push it past `max_shard_size`.

    Shards are named `model-00001-of-0000N.safetensors` with the usual index once `finish()` knows N; a
    single shard is named `model.safetensors` with no index. A tensor larger than the limit gets its own shard.
    """

    def __init__(self, folder: str | os.PathLike, max_shard_size: int | str = "5GB"):
        self.folder = Path(folder)
        self.max_bytes = convert_file_size_to_int(max_shard_size)
        if self.max_bytes <= 0:
            raise ValueError(f"max_shard_size must be positive, got {max_shard_size!r}")
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []  # key names per written shard
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._pending or any(name in shard for shard in self._shards):
            raise ValueError(f"tensor {name!r} written twice")
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size
        self.total_bytes += size

    def release_inputs(self) -> None:
        """Called at the end of each input shard, so no pending tensor keeps that shard's memory map (and the
        pages read from it) alive: pending tensors are written if they fill half a shard, else copied to RAM."""
        if self._pending_bytes >= self.max_bytes // 2:
            self._flush()
        else:
            self._pending = {name: tensor.clone() for name, tensor in self._pending.items()}

    def _flush(self) -> None:
        index = len(self._shards) + 1
        save_file(self._pending, self.folder / f"model-{index:05d}.partial", metadata={"format": "pt"})
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def finish(self) -> list[str]:
        """Write the last shard and the index; returns the shard file names."""
        if self._pending or not self._shards:
            self._flush()
        count = len(self._shards)
        names = (
            ["model.safetensors"]
            if count == 1
            else [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
        )
        for i, name in enumerate(names, start=1):
            os.replace(self.folder / f"model-{i:05d}.partial", self.folder / name)
        if count > 1:
            weight_map = {key: name for name, keys in zip(names, self._shards) for key in keys}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return names
