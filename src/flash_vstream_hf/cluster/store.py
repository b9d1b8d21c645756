"""Where the cluster keeps what must outlive a process: stream checkpoints and the registry.

A store is a folder or an fsspec URL (`s3://bucket/prefix`, `gs://...`, `memory://...` in tests). Every write is
atomic: a reader sees the old bytes or the new ones, never half a file. On a local folder that is a temporary
file in the same folder, fsynced, then `os.replace`; on an object store a single PUT already is.

A stream's checkpoint is two objects: the memory file (`streams/<id>/memory-<frames>.safetensors`) and, written
after it, `streams/<id>/checkpoint.json` naming it. A crash between the two leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import fsspec


class CheckpointStore:
    """Bytes and JSON documents under `root` (a folder path or an fsspec URL)."""

    def __init__(self, root: str | os.PathLike):
        root = os.fspath(root)
        if not root:
            raise ValueError("the checkpoint store must be a folder or an fsspec URL, got an empty string")
        self.root = root
        self.fs, self.path = fsspec.core.url_to_fs(root)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.fs.makedirs(self.path, exist_ok=True)

    def __repr__(self) -> str:
        return f"CheckpointStore({self.root!r})"

    def _full(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"a store key is a relative path without '..', got {key!r}")
        return f"{self.path.rstrip('/')}/{key}"

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write `data` under `key`, atomically."""
        full = self._full(key)
        parent = full.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if not self.local:
            self.fs.pipe_file(full, data)  # one PUT: atomic on object stores
            return
        handle, temporary = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, full)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def read_bytes(self, key: str) -> bytes | None:
        """The bytes under `key`, or None if there are none."""
        try:
            return self.fs.cat_file(self._full(key))
        except FileNotFoundError:
            return None

    def write_json(self, key: str, document: dict) -> None:
        self.write_bytes(key, json.dumps(document, indent=1, sort_keys=True).encode())

    def read_json(self, key: str) -> dict | None:
        data = self.read_bytes(key)
        return None if data is None else json.loads(data)

    def delete(self, key: str) -> None:
        """Remove `key` (a file or a folder); nothing if it is not there."""
        full = self._full(key)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)

    def list(self, prefix: str) -> list[str]:
        """Keys directly under the folder `prefix`."""
        full = self._full(prefix)
        if not self.fs.exists(full):
            return []
        base = self.path.rstrip("/") + "/"
        return sorted(name.removeprefix(base) for name in self.fs.ls(full, detail=False))
