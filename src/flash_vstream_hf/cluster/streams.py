"""What a cluster stream is: its spec (kept in the registry and in every checkpoint) and how its source opens.

Sources come from strangers (the HTTP API): a file only from the operator's media root, a URL only through the
address guard (streaming/url_guard.py), and push-mode frames through a bounded queue the API feeds.
"""

from __future__ import annotations

import math
import os
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..streaming.sources import FileSource, FrameSource, IteratorSource
from ..streaming.untrusted_url import open_untrusted_url
from ..streaming.url_guard import UrlPolicy

KINDS = ("file", "url", "push")
STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TIME_EPSILON = 1e-6


@dataclass(frozen=True)
class StreamSpec:
    """A stream as the API created it. `source` is a path under the media root (kind "file"), a URL ("url") or
    None ("push": frames arrive at `POST /v1/streams/{id}/frames`)."""

    stream_id: str
    kind: str
    source: str | None = None
    fps: float = 1.0
    speed: float | None = None  # a file played as if live at this speed; None: as fast as it decodes
    memory_seed: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> StreamSpec:
        return cls(**values)

    @property
    def replayable(self) -> bool:
        """A file can be read again from any point: its stream resumes exactly where its checkpoint left it."""
        return self.kind == "file"


def check_stream_id(stream_id: str) -> str:
    if not isinstance(stream_id, str) or not STREAM_ID.match(stream_id):
        raise ValueError(f"a stream id is 1-64 letters, digits, '_', '.' or '-' (not first), got {stream_id!r}")
    return stream_id


def media_file(media_root: str | os.PathLike | None, relative: str) -> Path:
    """The file `relative` names inside `media_root`; `PermissionError` for anything outside it (absolute paths,
    '..', symbolic links that leave it) or when the operator named no media root."""
    if media_root is None:
        raise PermissionError("file sources are off: the operator started the cluster without --media-root")
    root = Path(media_root).resolve()
    if os.path.isabs(relative) or "\\" in relative:
        raise PermissionError(f"a file source is a path relative to the media root, got {relative!r}")
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path == root:
        raise PermissionError(f"{relative!r} is outside the media root")
    if not path.is_file():
        raise FileNotFoundError(f"{relative!r} is not a file in the media root")
    return path


class PushedFrames:
    """Frames the API pushes, read by the stream's session as an iterator: a bounded queue, so a client that
    pushes faster than the host ingests is told to slow down (`Full`) instead of growing the host's RAM."""

    def __init__(self, capacity: int = 64):
        self._queue: queue.Queue = queue.Queue(capacity)
        self._closed = threading.Event()

    def push(self, frames: list[tuple[float, object]]) -> None:
        """Queue `(timestamp, image)` pairs, all or none; `queue.Full` when they do not all fit."""
        if self._closed.is_set():
            raise RuntimeError("the stream is closed")
        with self._queue.mutex:
            free = self._queue.maxsize - len(self._queue.queue)
        if len(frames) > free:
            raise queue.Full(f"{len(frames)} frames do not fit: {free} free of {self._queue.maxsize}")
        for frame in frames:
            self._queue.put_nowait(frame)

    def close(self) -> None:
        self._closed.set()

    def __iter__(self) -> Iterator[tuple[float, object]]:
        while not (self._closed.is_set() and self._queue.empty()):
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                continue


class ShiftedSource(FrameSource):
    """`inner`'s frames after `skip_until` seconds (a resumed file: what the checkpoint holds is not read into
    the memory twice), stamped `offset` seconds later (a rejoined live source continues the stream's clock)."""

    def __init__(self, inner: FrameSource, skip_until: float | None = None, offset: float = 0.0):
        super().__init__(inner.fps, speed=None)  # `inner` paces itself
        self.inner, self.skip_until, self.offset = inner, skip_until, offset
        self.live = inner.live

    def describe(self) -> str:
        return self.inner.describe()

    @property
    def timestamp_resets(self) -> int:
        return self.inner.timestamp_resets

    def _open(self) -> None:
        self.inner.open()

    def _frames(self, stop: threading.Event):
        for frame in self.inner.frames(stop):
            if self.skip_until is not None and frame.timestamp <= self.skip_until + _TIME_EPSILON:
                continue
            yield frame if self.offset == 0 else type(frame)(frame.timestamp + self.offset, frame.image)

    def close(self) -> None:
        self.inner.close()


def open_stream_source(
    spec: StreamSpec, media_root: str | None, url_policy: UrlPolicy, pushed: PushedFrames | None
) -> FrameSource:
    """The `FrameSource` of `spec`, checked (media root, address guard) before anything is opened."""
    if spec.kind == "file":
        return FileSource(media_file(media_root, spec.source), fps=spec.fps, speed=spec.speed)
    if spec.kind == "url":
        return open_untrusted_url(spec.source, url_policy, fps=spec.fps)
    if spec.kind == "push":
        return IteratorSource(pushed, fps=spec.fps, name=f"pushed frames of {spec.stream_id}")
    raise ValueError(f"kind must be one of {KINDS}, got {spec.kind!r}")


def live_gap_frames(seconds: float, fps: float | None) -> int:
    """Frames a live source sent while nobody was reading it for `seconds`."""
    return 0 if not fps or not math.isfinite(seconds) or seconds <= 0 else int(seconds * fps)
