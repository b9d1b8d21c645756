"""Frames pushed by the browser (a webcam streamed through the page) as a live source for `StreamingSession`.

The page sends a frame every fraction of a second; `push()` stamps it with its arrival time and hands it to the
session's reader thread through a small queue. The feed is live: when the model falls behind, the session's
backlog drops the oldest frames, and this queue never holds more than a few (a slow reader must not make the
page's requests wait), so memory stays bounded however long the camera runs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np

_END = object()


class WebcamFeed:
    """An iterable of `(timestamp, frame)` fed from another thread; ends when `close()` is called, or when no
    frame has come for `idle_timeout` seconds (the tab went away without saying so)."""

    def __init__(self, max_waiting: int = 4, idle_timeout: float = 30.0):
        self._queue: queue.Queue = queue.Queue(max_waiting)
        self._started: float | None = None
        self._closed = threading.Event()
        self.idle_timeout = idle_timeout
        self.frames_pushed = 0

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def push(self, image: np.ndarray) -> None:
        """Queue one `[H, W, 3]` uint8 frame stamped now; the oldest waiting frame goes if the queue is full."""
        if self._closed.is_set():
            return
        now = time.monotonic()
        self._started = now if self._started is None else self._started
        item = (now - self._started, image)
        while True:
            try:
                self._queue.put_nowait(item)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
        self.frames_pushed += 1

    def close(self) -> None:
        self._closed.set()
        try:
            self._queue.put_nowait(_END)
        except queue.Full:
            pass  # the reader checks `closed` between frames too

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        while not self._closed.is_set():
            try:
                item = self._queue.get(timeout=self.idle_timeout)
            except queue.Empty:
                return  # no frame for a long time: the stream ends ("finished") instead of hanging
            if item is _END:
                return
            yield item
