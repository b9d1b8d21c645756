"""`ServeApp`: one loaded model, a registry of per-tab viewers, and the Gradio page, with a Python API.

The Python API is what the page uses, minus the browser: `app.registry.get(session_id)` gives a `Viewer`
(`play_builtin`, `play_file`, `play_url`, `ask`, `status_line`), so tests and scripts can drive the app
without a browser.
"""

from __future__ import annotations

import logging
import os

# Before gradio is imported: no usage statistics or version checks sent from a machine serving a model.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from ..streaming.url_guard import UrlPolicy  # noqa: E402
from .builtin import BuiltinStream, PlaybackCache, default_streams  # noqa: E402
from .loading import ServedModel  # noqa: E402
from .registry import SessionRegistry  # noqa: E402
from .viewer import Viewer  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback: exposing a model server is a decision (--host 0.0.0.0), not a default
DEFAULT_PORT = 7860


class ServeApp:
    """The web app around one loaded model (`ServedModel`).

    Args:
        served: the model, its processor and what the page says about it.
        max_sessions: browser tabs served at once (each has its own stream, STAR memory and two threads).
        idle_timeout: seconds after which a tab that stopped polling is closed.
        streams: the built-in streams offered (default `default_streams()`).
        session_options: keyword arguments for each `StreamingSession` (e.g. `max_backlog`).
        generation_kwargs: more `generate()` arguments for every answer (e.g. `{"do_sample": True}`).
        url_policy: what a visitor's stream URL may reach (default: public addresses only; see
            streaming/url_guard.py and `serve --allow-private-urls`).
        title: the page's title.
    """

    def __init__(
        self,
        served: ServedModel,
        *,
        max_sessions: int = 8,
        idle_timeout: float = 120.0,
        streams: list[BuiltinStream] | None = None,
        session_options: dict | None = None,
        generation_kwargs: dict | None = None,
        url_policy: UrlPolicy | None = None,
        title: str = "Flash-VStream: ask about a video while it plays",
    ):
        self.served = served
        self.url_policy = url_policy or UrlPolicy()
        self.streams = streams or default_streams()
        self.session_options = dict(session_options or {})
        self.generation_kwargs = dict(generation_kwargs or {})
        self.playback = PlaybackCache(served.model.config.vision_config.image_size)
        self.registry = SessionRegistry(self.new_viewer, max_sessions=max_sessions, idle_timeout=idle_timeout)
        self.title = title
        self._blocks = None
        self.url: str | None = None

    @property
    def blocks(self):
        """The Gradio `Blocks` (built on first use, so the Python API works without importing gradio)."""
        if self._blocks is None:
            from .ui import build_blocks

            self._blocks = build_blocks(
                self.registry,
                stream_names=[stream.name for stream in self.streams],
                title=self.title,
                model_note=self.served.note,
                example_questions=self.served.example_questions,
                max_new_tokens=self.served.max_new_tokens,
            )
        return self._blocks

    def new_viewer(self) -> Viewer:
        """A viewer for a new browser session, sharing the model."""
        return Viewer(
            self.served.model,
            self.served.processor,
            streams=self.streams,
            playback=self.playback,
            generation_kwargs={"max_new_tokens": self.served.max_new_tokens, **self.generation_kwargs},
            session_options=self.session_options,
            url_policy=self.url_policy,
        )

    def launch(self, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, block: bool = True, **kwargs) -> str:
        """Serve the page on `host:port`; returns its URL. With `block=False` the server runs in a background
        thread (call `close()`); otherwise this returns when the server is stopped (Ctrl-C)."""
        blocks = self.blocks
        blocks.queue(default_concurrency_limit=None)
        options = {"ssr_mode": False, "show_error": True, "quiet": True, **kwargs}
        try:
            # The server listens, and the page answers, before gradio's launch() returns: a Ctrl-C (or any error)
            # from then on must stop it too, or its threads would keep the process alive.
            _, url, _ = blocks.launch(
                server_name=host,
                server_port=port,
                prevent_thread_lock=True,
                allowed_paths=[str(self.playback.folder)],
                **options,
            )
            self.url = url
            logger.info("serving on %s", url)
            if block:
                blocks.block_thread()
        except BaseException:
            self.close()
            raise
        if block:
            self.close()
        return url

    def close(self) -> None:
        """Stop every stream and the server."""
        self.registry.close_all()
        if self._blocks is not None:
            try:
                self._blocks.close()
            except Exception:  # closing a server that never started, or twice
                logger.debug("closing the server failed", exc_info=True)
        self.playback.close()
