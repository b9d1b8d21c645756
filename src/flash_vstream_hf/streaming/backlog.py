"""The bounded queue between a source's reader thread and the session's ingest thread.

Two policies for a full queue: `"block"` makes the reader wait (a file slows down, nothing is lost) and
`"drop"` throws the oldest waiting frame away and counts it (a live input keeps up with reality, and the memory
stays close to "now"). The ingest thread takes everything that is waiting, up to a batch, in one call.
"""

from __future__ import annotations

import threading
from collections import deque

BACKLOG_POLICIES = ("block", "drop")


class FrameBacklog:
    """Bounded FIFO of frames with a block-or-drop policy and an end-of-stream mark."""

    def __init__(self, capacity: int, policy: str):
        if capacity < 1:
            raise ValueError(f"backlog capacity must be >= 1, got {capacity}")
        if policy not in BACKLOG_POLICIES:
            raise ValueError(f"backlog policy must be one of {BACKLOG_POLICIES}, got {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self.dropped = 0
        self._items: deque = deque()
        self._closed = False
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def nbytes(self) -> int:
        """Bytes of the images waiting (items with an `image` array, as `VideoFrame`s have)."""
        with self._changed:
            return sum(getattr(getattr(item, "image", None), "nbytes", 0) for item in self._items)

    def put(self, item, stop: threading.Event) -> bool:
        """Queue `item`; with `"block"` wait for room (checking `stop`). Returns False, queuing nothing, if
        `stop` was set or the backlog was closed."""
        with self._changed:
            while self.policy == "block" and len(self._items) >= self.capacity:
                if stop.is_set() or self._closed:
                    return False
                self._changed.wait(0.1)
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._changed.notify_all()
            return True

    def close(self) -> None:
        """Mark the end of the stream: `take` returns what is left, then `None`."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def take(self, max_items: int) -> list | None:
        """Wait for frames and return up to `max_items` of them, oldest first; `None` once closed and empty."""
        with self._changed:
            while not self._items and not self._closed:
                self._changed.wait()
            if not self._items:
                return None
            batch = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            self._changed.notify_all()
            return batch

    def clear(self) -> int:
        """Discard the waiting frames and return how many there were."""
        with self._changed:
            count = len(self._items)
            self._items.clear()
            self._changed.notify_all()
            return count
