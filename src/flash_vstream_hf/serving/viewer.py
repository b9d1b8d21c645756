"""One browser session: its stream, its STAR memory (a `StreamingSession`) and its questions.

Every method is safe from any thread (the web server calls them from its worker threads, several at once: a
question streams while the status line polls and the user picks another source). Whatever the user can get
wrong (a corrupt upload, an unreachable URL, a question before the first frame) raises `UserError`, whose
message the page shows as is; the session, and every other session, go on.

A question's answer streams from a background thread (`AnswerStream`). If the consumer goes away mid-answer
(the tab was closed, so the server closes the generator), generation stops at the next token: `ask()` sets a
stopping criterion on its way out, instead of letting an answer nobody reads hold a core until
`max_new_tokens`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..streaming import AnswerStream, IteratorSource, StreamingSession
from ..streaming.untrusted_url import open_untrusted_url
from ..streaming.url_guard import UrlPolicy, UrlRefused
from .builtin import BuiltinStream, PlaybackCache, frames
from .webcam import WebcamFeed

logger = logging.getLogger(__name__)

START_ERRORS = (OSError, ValueError, ImportError, RuntimeError, TypeError)  # what opening a bad source raises


class UserError(Exception):
    """Something the user can fix; the message is shown on the page as is."""


class CancelOnEvent(StoppingCriteria):
    """Stops `generate()` once `event` is set (the reader of the answer went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def clock(seconds: float | None) -> str:
    """`MM:SS.s` (or `H:MM:SS.s`) of a stream time."""
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:d}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes:02d}:{secs:04.1f}"


class Viewer:
    """The state of one browser session. `streams` are the built-in streams offered; `playback` encodes their
    browser copies (shared by all sessions); `session_options` go to every `StreamingSession` this viewer makes
    (one per source: a new source starts a new memory); `url_policy` is what a visitor's stream URL may reach
    (default: public addresses only, see streaming/url_guard.py)."""

    def __init__(
        self,
        model,
        processor,
        *,
        streams: list[BuiltinStream],
        playback: PlaybackCache,
        generation_kwargs: dict | None = None,
        session_options: dict | None = None,
        url_policy: UrlPolicy | None = None,
    ):
        self.model = model
        self.url_policy = url_policy or UrlPolicy()
        self.processor = processor
        self.streams = {stream.name: stream for stream in streams}
        self.playback = playback
        self.generation_kwargs = dict(generation_kwargs or {})
        self.session_options = dict(session_options or {})
        self.source_label: str | None = None
        self.last_used = time.monotonic()
        self.answers_cancelled = 0
        self.answers_given = 0
        self._session: StreamingSession | None = None
        self._webcam: WebcamFeed | None = None
        self._answers: dict[threading.Event, AnswerStream] = {}  # answers being read, by their cancel flag
        self._orphans: list[threading.Thread] = []
        self._lock = threading.RLock()  # the current session and feed; held while a new source opens
        self._closed = False

    # -- sources --------------------------------------------------------------------------------------------------

    def play_builtin(self, name: str) -> str:
        """Start the built-in stream `name`; returns the path of the video the page plays."""
        stream = self.streams.get(name)
        if stream is None:
            raise UserError(f"there is no built-in stream {name!r}; pick one of: {', '.join(self.streams)}")
        video = self.playback.path(stream)
        size = self.model.config.vision_config.image_size
        # The model reads the generated frames, paced at wall-clock speed like the video the page plays.
        source = IteratorSource(frames(stream, size), fps=1.0, speed=1.0, name=f"built-in: {stream.name}")
        self._start(source, f"built-in stream {stream.name}")
        return video

    def play_file(self, path: str | None, name: str | None = None) -> str:
        """Start an uploaded video file (played as if live); returns its path for the page's player."""
        if not path:
            raise UserError("no file was uploaded")
        self._start(path, f"upload {name or path}", speed=1.0)
        return path

    def play_url(self, url: str) -> None:
        """Start a stream URL: HTTP(S) (a video file, HLS, DASH, MJPEG...), or RTSP/RTMP where the operator allows
        the host. Checked against `url_policy` before anything connects: the server's own network is off limits."""
        url = (url or "").strip()
        try:
            source = open_untrusted_url(url, self.url_policy)
        except UrlRefused as error:
            raise UserError(str(error)) from error
        self._start(source, url)

    def push_webcam(self, image) -> None:
        """A frame from the page's webcam; the first one (or the first after another source) starts the stream."""
        if image is None:
            return
        with self._lock:
            feed = self._webcam
            session = self._session
            if feed is None or feed.closed or session is None or not session.running:
                feed = WebcamFeed()
                source = IteratorSource(feed, fps=1.0, live=True, name="webcam")
                self._start(source, "webcam")
                self._webcam = feed
        feed.push(image)

    def _start(self, source, label: str, **options) -> None:
        """Stop the current stream and start `source` in a new session (a new stream gets a fresh memory)."""
        with self._lock:
            if self._closed:
                raise UserError("this page's session has ended; reload the page")
            self._stop_locked()
            session = StreamingSession(
                self.model, self.processor, generation_kwargs=self.generation_kwargs, **self.session_options
            )
            try:
                session.start(source, **options)
            except START_ERRORS as error:
                logger.info("cannot start %s: %s", label, error)
                raise UserError(f"cannot play {label}: {_one_line(error)}") from error
            self._session, self.source_label = session, label
            self.last_used = time.monotonic()

    def stop(self) -> None:
        """Stop the stream; its memory stays, so questions still work."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._webcam is not None:
            self._webcam.close()
            self._webcam = None
        if self._session is not None:
            self._session.stop(timeout=10)

    def wait_for_frames(self, count: int, timeout: float | None = None) -> bool:
        """Wait until the current stream's memory holds `count` frames (False on timeout or with no stream)."""
        session = self._session
        return session is not None and session.wait_for_frames(count, timeout)

    # -- questions ------------------------------------------------------------------------------------------------

    def ask(self, question: str, max_new_tokens: int | None = None) -> Iterator[str]:
        """The answer to `question` as it is generated: each item is the whole answer so far, stamped with the
        stream time and the number of frames it saw; the last one adds the timings. Closing the iterator early
        stops generation."""
        question = (question or "").strip()
        if not question:
            raise UserError("type a question first")
        session = self._session
        if session is None:
            raise UserError("there is no stream yet: pick the built-in stream, upload a video or open a URL first")
        snapshot = session.snapshot()
        if snapshot.frames == 0:
            raise UserError("no frame has reached the memory yet: the stream is starting; ask again in a moment")
        self.last_used = time.monotonic()
        cancel = threading.Event()
        kwargs = {"stopping_criteria": StoppingCriteriaList([CancelOnEvent(cancel)])}
        if max_new_tokens:
            kwargs["max_new_tokens"] = int(max_new_tokens)
        stamp = f"[t={clock(snapshot.stream_time)} · {snapshot.frames} frames]"
        try:
            stream = session.ask_stream(question, snapshot=snapshot, **kwargs)
        except Exception as error:  # e.g. an empty question after the chat template: the stream goes on
            raise UserError(f"the question failed: {_one_line(error)}") from error
        with self._lock:
            self._answers[cancel] = stream
        try:
            yield f"{stamp} …"
            text = ""
            for piece in stream:
                text += piece
                yield f"{stamp} {text}"
            answer = stream.answer
            if cancel.is_set():  # close() stopped it: nobody is reading
                return
            self.answers_given += 1
            first = "--" if answer.time_to_first_token is None else f"{answer.time_to_first_token:.2f} s"
            yield f"{stamp} {answer.text or '(empty answer)'}\n\n*first token {first}, answer {answer.latency:.2f} s*"
        except Exception as error:  # the session has logged and counted it; the stream goes on
            raise UserError(f"the question failed: {_one_line(error)}") from error
        finally:
            # Reached early when the reader went away (the server closed this generator): stop generating.
            self._cancel(cancel)
            with self._lock:
                thread = _generator_thread(self._answers.pop(cancel, None))
                self._orphans = [t for t in self._orphans if t.is_alive()]
                if thread is not None and thread.is_alive():  # it stops at its next token
                    self._orphans.append(thread)

    def _cancel(self, cancel: threading.Event) -> None:
        """Stop the answer of `cancel` at its next token; counted when it was still being generated."""
        with self._lock:
            stream = self._answers.get(cancel)
            thread = _generator_thread(stream)
            if thread is not None and thread.is_alive() and not cancel.is_set():
                self.answers_cancelled += 1
            cancel.set()

    @property
    def answering(self) -> int:
        """Answers still being generated (their background threads alive)."""
        with self._lock:
            threads = [_generator_thread(stream) for stream in self._answers.values()] + self._orphans
            return sum(thread is not None and thread.is_alive() for thread in threads)

    # -- status ---------------------------------------------------------------------------------------------------

    def status_line(self) -> str:
        """What the page's status line shows: the source, then stream time, frames, ingest fps, memory."""
        self.last_used = time.monotonic()
        session = self._session
        if session is None:
            return "no stream: pick the built-in stream, upload a video, open the webcam or a stream URL"
        return f"{self.source_label} | {session.status().line()}"

    def status(self):
        """The current `StreamStatus`, or None before the first stream."""
        session = self._session
        return None if session is None else session.status()

    def memory_bytes(self) -> int:
        """Bytes held by this viewer's memory (0 before a stream)."""
        session = self._session
        return 0 if session is None else session.status().memory_bytes

    def close(self) -> None:
        """Stop everything this viewer runs (the tab went away): its stream and any answer being generated."""
        with self._lock:
            self._closed = True
            for cancel in list(self._answers):
                self._cancel(cancel)
            self._stop_locked()


def _generator_thread(stream: AnswerStream | None) -> threading.Thread | None:
    """The thread generating `stream`'s answer. `AnswerStream` keeps it private; the viewer needs to know when an
    answer it cancelled has really stopped (a closed tab must not leave generation running)."""
    return getattr(stream, "_thread", None)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
