"""The viewers of all browser sessions, keyed by the web framework's session id, sharing one loaded model.

Bounded: at most `max_sessions` viewers at once (each holds a STAR memory, a frame backlog and two threads), so a
crowd of tabs cannot exhaust the machine; one more gets a clear "full" message instead. A viewer is closed when
its tab unloads, and, in case that signal never comes (a browser killed, a network gone), after `idle_timeout`
seconds without any call: an open page polls its status every second, so only abandoned ones go idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .viewer import UserError, Viewer

logger = logging.getLogger(__name__)


class SessionRegistry:
    """`get(key)` returns the viewer of a browser session, made by `factory()` on first use."""

    def __init__(self, factory: Callable[[], Viewer], max_sessions: int = 8, idle_timeout: float = 120.0):
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.factory = factory
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.opened = self.closed = 0
        self._viewers: dict[str, Viewer] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="flash-vstream-serve-reaper", daemon=True)
        self._reaper.start()

    def __len__(self) -> int:
        return len(self._viewers)

    def __contains__(self, key: str) -> bool:
        return key in self._viewers

    def get(self, key: str | None, create: bool = True) -> Viewer | None:
        """The viewer of session `key`; a new one if there is none and `create` (None if not). Raises
        `UserError` when `max_sessions` viewers are open already."""
        if not key:
            raise UserError("this request has no session; reload the page")
        with self._lock:
            viewer = self._viewers.get(key)
            if viewer is not None or not create:
                return viewer
            if len(self._viewers) >= self.max_sessions:
                raise UserError(
                    f"the server is busy: {self.max_sessions} streams are open already; try again in a few minutes"
                )
            viewer = self._viewers[key] = self.factory()
            self.opened += 1
            return viewer

    def close(self, key: str | None) -> bool:
        """Close and forget the viewer of session `key` (its tab went away); False if there was none."""
        with self._lock:
            viewer = self._viewers.pop(key, None) if key else None
        if viewer is None:
            return False
        self._close(viewer, key)
        return True

    def close_all(self) -> None:
        """Close every viewer and stop reaping (the server is shutting down)."""
        self._stop.set()
        with self._lock:
            viewers, self._viewers = dict(self._viewers), {}
        for key, viewer in viewers.items():
            self._close(viewer, key)

    def reap(self, now: float | None = None) -> int:
        """Close the viewers idle for longer than `idle_timeout`; returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = {k: v for k, v in self._viewers.items() if now - v.last_used > self.idle_timeout}
            for key in idle:
                del self._viewers[key]
        for key, viewer in idle.items():
            logger.info("closing session %s: idle for %.0f s", key, now - viewer.last_used)
            self._close(viewer, key)
        return len(idle)

    def _close(self, viewer: Viewer, key: str) -> None:
        try:
            viewer.close()
        except Exception:  # one viewer failing to close must not stop the others from closing
            logger.exception("closing session %s failed", key)
        with self._lock:
            self.closed += 1

    def _reap_loop(self) -> None:
        while not self._stop.wait(min(30.0, max(1.0, self.idle_timeout / 4))):
            self.reap()
