"""Checkpoints of a stream's memory every K frames, written off the ingest thread.

The ingest thread only hands over the snapshot (`StreamingSession(on_frame=...)`); a writer thread saves it. If
the store is slower than ingest, only the newest waiting snapshot is written (an older one is worth nothing once
a newer exists), so a checkpoint is at most K frames plus one write behind the stream.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass

from transformers.utils import logging

from ..streaming.answering import StreamSnapshot
from .store import CheckpointStore

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """What `checkpoint.json` says: the memory file's key, the frames it holds and the stream time of the last."""

    memory_key: str
    frames_seen: int
    stream_time: float | None
    written_at: float  # time.time()

    def to_dict(self) -> dict:
        return dict(vars(self))


def memory_to_bytes(memory) -> bytes:
    """The memory file of `memory` (safetensors), as bytes."""
    with tempfile.TemporaryDirectory(prefix="flash-vstream-") as folder:
        path = os.path.join(folder, "memory.safetensors")
        memory.save(path)
        with open(path, "rb") as file:
            return file.read()


def memory_from_bytes(data: bytes, memory_class):
    """A memory read (and checked in full) from the bytes of its file."""
    with tempfile.TemporaryDirectory(prefix="flash-vstream-") as folder:
        path = os.path.join(folder, "memory.safetensors")
        with open(path, "wb") as file:
            file.write(data)
        return memory_class.load(path)


def stream_key(stream_id: str, name: str) -> str:
    return f"streams/{stream_id}/{name}"


def read_checkpoint(store: CheckpointStore, stream_id: str) -> Checkpoint | None:
    document = store.read_json(stream_key(stream_id, "checkpoint.json"))
    return None if document is None else Checkpoint(**document)


class StreamCheckpointer:
    """Saves a stream's memory to `store` every `every` frames (`on_frame`), and on `flush()`."""

    def __init__(self, store: CheckpointStore, stream_id: str, every: int, last: Checkpoint | None = None):
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 frame, got {every}")
        self.store, self.stream_id, self.every = store, stream_id, every
        self.last = last
        self.failures = 0
        self._pending: StreamSnapshot | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name=f"checkpoint-{stream_id}", daemon=True)
        self._writer.start()

    @property
    def _last_frames(self) -> int:
        return 0 if self.last is None else self.last.frames_seen

    def on_frame(self, view: StreamSnapshot) -> None:
        """Ingest thread: hand `view` to the writer when K frames have passed since the last checkpoint."""
        if view.frames % self.every == 0:
            self._hand_over(view)

    def flush(self, view: StreamSnapshot, timeout: float = 30.0) -> None:
        """Write `view` now (if newer than the last checkpoint) and wait for it."""
        if view.frames > self._last_frames:
            self._hand_over(view)
        with self._wake:
            self._wake.wait_for(lambda: self._pending is None, timeout)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def _hand_over(self, view: StreamSnapshot) -> None:
        with self._wake:
            self._pending = view
            self._wake.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                view = self._pending
            try:
                if view.frames > self._last_frames:
                    self._write(view)
            except Exception:
                self.failures += 1  # the next checkpoint tries again; the stream goes on
                logger.exception("checkpoint of stream %s at %d frames failed", self.stream_id, view.frames)
            with self._wake:
                if self._pending is view:
                    self._pending = None
                self._wake.notify_all()

    def _write(self, view: StreamSnapshot) -> None:
        key = stream_key(self.stream_id, f"memory-{view.frames:012d}.safetensors")
        self.store.write_bytes(key, memory_to_bytes(view.memory))
        checkpoint = Checkpoint(key, view.frames, view.stream_time, time.time())
        self.store.write_json(stream_key(self.stream_id, "checkpoint.json"), checkpoint.to_dict())
        previous, self.last = self.last, checkpoint
        if previous is not None and previous.memory_key != key:
            self.store.delete(previous.memory_key)
