"""`StreamingSession`: ingest a video stream in the background and answer questions about it at any moment.

One process, two background threads per session:

    source -> [reader thread: decode, sample, pace] -> bounded backlog -> [ingest thread: CLIP preprocessing,
    vision tower on everything waiting (up to `max_batch` frames), STAR consolidation frame by frame]

and questions from any thread, each reading an immutable memory snapshot while ingest goes on.
Frames are checked with the processing package's frame rule (`check_frame`) and preprocessed through the
processor's entry point (`preprocess_frames`); the status (`status.py`) and the model warm-up (`warm_up.py`) are
modules of their own.

The vision tower runs on batches (the expensive part, and what lets ingest catch up when it falls behind), but
frames enter the memory one at a time, so the memory is the same whatever the batching and however fast the
machine is: asking at a timestamp gives the answer that frame-by-frame streaming of the same frames gives.

The reader checks every frame before it is queued: a frame without a finite timestamp, or whose image is not an
`[H, W, 3]` uint8 array (NaN or infinite values included), is counted as bad and skipped; a good one is
downscaled to at most `max_frame_side` on its shorter side, so the backlog's bytes are bounded whatever the
source's resolution. A source that fails mid-stream goes through one path, `_source_failed`: the session ends
`failed`, with the stream time it reached.

A session is a small state machine, guarded by one lock (one stream, one reader and one ingest thread at a time):

    idle -> starting -> running -> finished | failed      (the source ended, or failed)
                           `-> stopping -> stopped         (stop())
    and from any ended state, start() again: the memory carries on.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import replace

import torch
from transformers.utils import logging

from ..modeling import FlashVStreamMemory
from ..processing.frames_flash_vstream import check_frame
from ..processing.video_io import VideoFrame
from .answering import Answer, AnswerStream, NoFramesError, StreamSnapshot, TimedTextStreamer, generate_answer
from .backlog import BACKLOG_POLICIES, FrameBacklog
from .sources import FrameSource, StreamInterruptedError, _as_seconds, downscale_frame, open_source
from .status import StreamStatus
from .warm_up import ensure_warm

logger = logging.get_logger(__name__)

_TIME_EPSILON = 1e-6  # seconds, as in video_io: absorbs pts * time_base rounding
ACTIVE_STATES = ("starting", "running", "stopping")  # a stream is open: start() is refused
ENDED_STATES = ("finished", "stopped", "failed")


class StreamingSession:
    """Watch a video stream and answer questions about it while it plays.

    Args:
        model: a `FlashVStreamForConditionalGeneration` (several sessions may share one).
        processor: its `FlashVStreamProcessor`.
        memory: a memory to continue (e.g. `FlashVStreamMemory.load(path)`); a new one by default.
        backlog: `"block"` or `"drop"` when frames arrive faster than they are ingested; by default `"block"`
            for recorded sources (nothing is lost) and `"drop"` for live ones (the oldest waiting frame goes).
        max_backlog: frames that may wait for the ingest thread.
        max_batch: frames the vision tower encodes in one call when ingest has fallen behind.
        max_frame_side: frames are downscaled (aspect ratio kept) before they are queued, to at most this many
            pixels on their shorter side and `MAX_ASPECT_RATIO` times that on their longer one; by default twice
            the vision tower's input size (448 for a 224-pixel CLIP), so CLIP preprocessing sees enough pixels
            and a queued frame takes at most 2.4 MB (0.8 MB at 4:3) whatever the source's resolution.
        generation_kwargs: defaults for `generate()` in `ask`, e.g. `{"max_new_tokens": 128}`.
        warm_up: run the model once per process before using it from threads (see `warm_up.py`).
        on_frame: called in the ingest thread with the new `StreamSnapshot` after each frame enters the memory
            (e.g. to checkpoint every K frames); it must return quickly, and what it raises is logged and ignored.

    One stream at a time: `start()` while a stream is starting, running or stopping raises `RuntimeError`.

    Example:
        ```python
        with StreamingSession(model, processor) as session:
            session.start("video.mp4", speed=1.0)       # plays the file as if it were live, 1 frame per second
            session.wait_for_frames(10)
            print(session.ask("What is happening?").text)
            print(session.status().line())
        ```
    """

    def __init__(
        self,
        model,
        processor,
        memory: FlashVStreamMemory | None = None,
        *,
        backlog: str | None = None,
        max_backlog: int = 32,
        max_batch: int = 8,
        max_frame_side: int | None = None,
        generation_kwargs: dict | None = None,
        warm_up: bool = True,
        on_frame: Callable[[StreamSnapshot], None] | None = None,
    ):
        if backlog is not None and backlog not in BACKLOG_POLICIES:
            raise ValueError(f"backlog must be one of {BACKLOG_POLICIES} or None, got {backlog!r}")
        if max_batch < 1 or max_backlog < 1:
            raise ValueError(f"max_batch and max_backlog must be >= 1, got {max_batch} and {max_backlog}")
        if max_frame_side is None:
            max_frame_side = 2 * model.config.vision_config.image_size
        if max_frame_side < 1:
            raise ValueError(f"max_frame_side must be >= 1, got {max_frame_side}")
        self.model = model
        self.processor = processor
        if memory is None:
            memory = model.new_memory(1)
        model.check_memory(memory)
        if memory.batch_size != 1:
            raise ValueError(f"a session streams one video: memory must have batch size 1, got {memory.batch_size}")
        self.memory = memory
        self.backlog_policy = backlog
        self.max_backlog = max_backlog
        self.max_batch = max_batch
        self.max_frame_side = max_frame_side
        self.generation_kwargs = {"max_new_tokens": 256, **(generation_kwargs or {})}
        self._warm_up = warm_up
        self._on_frame = on_frame

        self._view = StreamSnapshot(memory.snapshot(), None)  # replaced (atomically) after every frame
        self._state = "idle"
        self._source: FrameSource | None = None
        self._backlog: FrameBacklog | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._ingester: threading.Thread | None = None
        self._checkpoints: list[tuple[float, Future]] = []
        self._lock = threading.Lock()  # state, counters, checkpoints, the current run
        self._changed = threading.Condition(self._lock)  # notified on every change of state and every frame
        self._frames_in = self._ingested = self._dropped = self._failed = self._backlog_dropped = 0
        self._bad_timestamps = self._earlier_resets = 0
        self._answered = self._question_failures = 0
        self._work: deque[tuple[int, float]] = deque(maxlen=16)  # (frames, seconds) of recent ingest batches
        self._error: str | None = None
        self._failed_at: float | None = None

    # -- stream control -------------------------------------------------------------------------------------------

    def start(
        self,
        source,
        *,
        fps: float | None = 1.0,
        speed: float | None = None,
        backend: str | None = None,
        input_format: str | None = None,
    ) -> StreamingSession:
        """Open `source` and start ingesting it in the background; returns at once.

        `source` is a `FrameSource` or anything `open_source` takes (file path, URL, camera device, iterable of
        frames); `fps`, `speed` (None: as fast as possible), `backend` and `input_format` apply to the latter.
        Opening errors (missing or corrupt file, no video stream, unreachable URL) are raised here and leave
        the session as it was. A session that has ended (finished, stopped, failed) can start another source:
        its memory carries on. Raises `RuntimeError` if a stream is starting, running or stopping, from any
        thread: a session runs one stream at a time.
        """
        previous = self._claim_start()
        try:
            source = self._open(source, fps=fps, speed=speed, backend=backend, input_format=input_format)
        except BaseException:
            self._set_state(previous)
            raise
        self._launch(source)
        return self

    def _claim_start(self) -> str:
        """idle or ended -> starting, atomically; returns the state to go back to if opening fails."""
        with self._changed:
            if self._state in ACTIVE_STATES:
                raise RuntimeError(
                    f"the session is already streaming (it is {self._state}); stop() it or wait() for it first"
                )
            previous, self._state = self._state, "starting"
            self._changed.notify_all()
            return previous

    def _set_state(self, state: str) -> None:
        with self._changed:
            self._state = state
            self._changed.notify_all()

    def _open(self, source, **options) -> FrameSource:
        """The opened source, the model warm; raises what opening raises (nothing is left open then)."""
        source = open_source(source, **options)
        source.open()
        try:
            self._ensure_warm()
        except BaseException:
            source.close()
            raise
        return source

    def _launch(self, source: FrameSource) -> None:
        """starting -> running: a new backlog, stop event and pair of threads for `source`."""
        policy = self.backlog_policy or ("drop" if source.live else "block")
        # The threads get this run's source, backlog and stop event: a reader still blocked in a live read
        # after stop() must not touch the next run's.
        backlog, stop = FrameBacklog(self.max_backlog, policy), threading.Event()
        suffix = f"{id(self):x}"
        with self._changed:
            self._retire_run()
            self._source, self._backlog, self._stop = source, backlog, stop
            self._error = self._failed_at = None
            self._view = StreamSnapshot(self.memory.snapshot(), None)
            self._work.clear()
            self._reader = threading.Thread(
                target=self._read, args=(source, backlog, stop), name=f"flash-vstream-reader-{suffix}", daemon=True
            )
            self._ingester = threading.Thread(
                target=self._ingest, args=(backlog, stop), name=f"flash-vstream-ingest-{suffix}", daemon=True
            )
            # started under the lock, so that stop() finds them started, whenever it comes
            self._reader.start()
            self._ingester.start()
            self._state = "running"
            self._changed.notify_all()

    def _retire_run(self) -> None:
        """Fold the counters kept by the previous run's backlog and source into the session's (lock held)."""
        if self._backlog is not None:
            self._backlog_dropped += self._backlog.dropped
        if self._source is not None:
            self._earlier_resets += self._source.timestamp_resets

    @property
    def running(self) -> bool:
        """A stream is starting, running or stopping."""
        return self._state in ACTIVE_STATES

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the source is exhausted and every frame read is ingested (or the stream was stopped or
        failed); every `snapshot_at` future of the stream is settled then. False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._state not in ACTIVE_STATES, timeout)

    def wait_for_frames(self, count: int = 1, timeout: float | None = None) -> bool:
        """Wait until the memory holds at least `count` frames (False on timeout or if the stream ended first)."""
        with self._changed:
            self._changed.wait_for(lambda: self._view.frames >= count or self._state not in ACTIVE_STATES, timeout)
            return self._view.frames >= count

    def stop(self, timeout: float | None = None) -> None:
        """Stop reading the source; frames already waiting are discarded (counted as dropped). The memory and
        everything answered so far stay; `start()` may be called again. A no-op if no stream is running; a
        stream still starting (in another thread) is waited for, then stopped.

        Waits (up to `timeout` seconds) for the ingest thread to finish the vision call it may be in, so the
        memory no longer changes once `stop()` returns. The reader thread is not waited for: a live input may be
        blocked in a read until its timeout; it only ends its source then.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._state != "starting", timeout):
                logger.warning("the stream was still starting after %s s: not stopped", timeout)
                return
            if self._state not in ("running", "stopping"):
                return
            self._state = "stopping"
            self._stop.set()
            self._backlog.close()
            ingester = self._ingester
            self._changed.notify_all()
        if ingester is not threading.current_thread():
            ingester.join(timeout)
            if ingester.is_alive():
                logger.warning("the ingest thread did not stop within %s s", timeout)

    def __enter__(self) -> StreamingSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- memory ---------------------------------------------------------------------------------------------------

    def snapshot(self) -> StreamSnapshot:
        """The memory as it is now, frozen, with the stream time of its newest frame."""
        return self._view

    def snapshot_at(self, timestamp: float) -> Future:
        """A future `StreamSnapshot` of the memory holding exactly the frames stamped `<= timestamp` (seconds of
        the current source, or of the next one if called before `start()`); resolved as ingest passes that
        point. Ingest goes on meanwhile.

        If the stream ends first, the future gets the last snapshot with `stream_ended=True` (it holds the whole
        stream, and is earlier than `timestamp`) when the source was exhausted, a `StreamInterruptedError` when
        the source failed, and a `RuntimeError` when it was stopped. Called once the stream has ended, it is
        settled at once, the same way. Raises `ValueError` if the stream is already past `timestamp`.
        """
        if _as_seconds(timestamp) is None:
            raise ValueError(f"timestamp must be a finite number of seconds, got {timestamp!r}")
        future: Future = Future()
        with self._lock:
            current = self._view.stream_time
            if self._state not in ("idle", "starting") and current is not None and current > timestamp + _TIME_EPSILON:
                raise ValueError(f"the stream is already at {current:.3f} s, past {timestamp} s")
            if self._state not in ENDED_STATES:
                self._checkpoints.append((timestamp, future))
                self._checkpoints.sort(key=lambda item: item[0])
                return future
            ending = self._ending()
        _settle(future, timestamp, *ending)
        return future

    def save_memory(self, path: str | os.PathLike) -> None:
        """Save the memory (safetensors); resume with `StreamingSession(..., memory=FlashVStreamMemory.load(path))`."""
        self._view.memory.save(path)

    # -- questions ------------------------------------------------------------------------------------------------

    def ask(self, question: str | list[dict], *, snapshot: StreamSnapshot | None = None, **generate_kwargs):
        """Answer `question` from `snapshot` (default: the memory now) while ingest goes on; returns an `Answer`
        (text, stream time and frames covered, time to first token, latency). Safe from any thread.

        Raises `NoFramesError` at once if no frame has been ingested yet. A failed question is logged, counted
        and raised to the caller; the stream goes on.
        """
        started = time.perf_counter()
        snapshot = self._checked_snapshot(snapshot)
        return self._answer(question, snapshot, {**self.generation_kwargs, **generate_kwargs}, started)

    def ask_stream(
        self, question: str | list[dict], *, snapshot: StreamSnapshot | None = None, **generate_kwargs
    ) -> AnswerStream:
        """Like `ask`, but returns an `AnswerStream` yielding the text as it is generated."""
        started = time.perf_counter()
        snapshot = self._checked_snapshot(snapshot)
        kwargs = {**self.generation_kwargs, **generate_kwargs}

        def generate(streamer: TimedTextStreamer):
            return self._answer(question, snapshot, kwargs, started, streamer)

        return AnswerStream(generate, TimedTextStreamer(self.processor.tokenizer))

    def _answer(
        self,
        question: str | list[dict],
        snapshot: StreamSnapshot,
        kwargs: dict,
        started: float,
        streamer: TimedTextStreamer | None = None,
    ) -> Answer:
        """Answers one question; a failure is logged, counted and raised, and the stream goes on."""
        try:
            answer = generate_answer(self.model, self.processor, question, snapshot, kwargs, started, streamer)
        except BaseException:
            self._count_question(failed=True)
            logger.exception("question failed: %r", question)
            raise
        self._count_question(failed=False)
        return answer

    def _checked_snapshot(self, snapshot: StreamSnapshot | None) -> StreamSnapshot:
        """`snapshot`, or the memory now; a question about an empty memory fails at once (bug B11 in
        docs/original_model.md)."""
        snapshot = self._view if snapshot is None else snapshot
        if snapshot.frames == 0:
            self._count_question(failed=True)
            state = "has not started" if self._state == "idle" else f"is {self._state}"
            raise NoFramesError(
                f"no frame has reached the memory yet (the stream {state}): "
                "wait for it (session.wait_for_frames()) and ask again"
            )
        return snapshot

    # -- status ---------------------------------------------------------------------------------------------------

    def status(self) -> StreamStatus:
        with self._lock:
            frames, seconds = sum(f for f, _ in self._work), sum(s for _, s in self._work)
            view, backlog, source = self._view, self._backlog, self._source
            return StreamStatus(
                state=self._state,
                source=None if source is None else source.describe(),
                stream_time=view.stream_time,
                frames_in=self._frames_in,
                frames_ingested=self._ingested,
                frames_dropped=self._dropped + self._backlog_dropped + (backlog.dropped if backlog is not None else 0),
                frames_failed=self._failed,
                bad_timestamps=self._bad_timestamps,
                timestamp_resets=self._earlier_resets + (source.timestamp_resets if source is not None else 0),
                backlog=len(backlog) if backlog is not None else 0,
                backlog_bytes=backlog.nbytes() if backlog is not None else 0,
                ingest_fps=frames / seconds if seconds > 0 else None,
                memory_frames=view.frames,
                memory_tokens=view.memory.get_seq_length(),
                memory_bytes=view.memory.nbytes,
                questions_answered=self._answered,
                questions_failed=self._question_failures,
                error=self._error,
                failed_at=self._failed_at,
            )

    # -- background threads ---------------------------------------------------------------------------------------

    def _read(self, source: FrameSource, backlog: FrameBacklog, stop: threading.Event) -> None:
        """Reader thread: source -> checked, downscaled frames -> backlog."""
        last_time = None  # stream time of the last frame read
        try:
            with contextlib.closing(source.frames(stop)) as frames:  # closing ends the decoder at once
                for frame in frames:
                    with self._lock:
                        self._frames_in += 1
                    timestamp = self._placed(frame, last_time)
                    if timestamp is None:
                        continue
                    last_time = timestamp
                    image = self._checked_image(getattr(frame, "image", None), timestamp)
                    if image is not None and not backlog.put(VideoFrame(timestamp, image), stop):
                        with self._lock:
                            self._dropped += 1
                        break
        except BaseException as error:  # whatever a source raises, the stream's end must say so
            self._source_failed(source, error, stop, last_time)
        finally:
            backlog.close()

    def _placed(self, frame, previous: float | None) -> float | None:
        """The frame's timestamp in seconds, or None (logged, counted as a bad frame) when it is not a finite
        number or goes back: a source's own timestamps are re-based by its `StreamClock`, a custom source's
        must not go back."""
        timestamp = _as_seconds(getattr(frame, "timestamp", None))
        if timestamp is not None and (previous is None or timestamp + _TIME_EPSILON >= previous):
            return timestamp
        why = "is not a finite number" if timestamp is None else f"is earlier than the previous frame's {previous} s"
        logger.warning("bad frame skipped: its timestamp %r %s", getattr(frame, "timestamp", None), why)
        with self._lock:
            self._failed += 1
            self._bad_timestamps += 1
        return None

    def _checked_image(self, image, timestamp: float):
        """The frame's `[h, w, 3]` uint8 image, downscaled to `max_frame_side`; None (logged, counted) for an
        image the model must not see."""
        try:
            return downscale_frame(check_frame(image), self.max_frame_side)
        except Exception as error:
            logger.warning("bad frame at %.3f s skipped: %s", timestamp, error)
            with self._lock:
                self._failed += 1
            return None

    def _source_failed(
        self, source: FrameSource, error: BaseException, stop: threading.Event, last_time: float | None
    ) -> None:
        """The one path by which a source that ended early becomes visible: a decode error mid-file, a truncated
        file, a dropped connection, an iterator that raised. The session ends `failed` with the error and the
        stream time reached (`status().error`, `.failed_at`); the `snapshot_at` futures not reached get a
        `StreamInterruptedError`. A source raising `StreamInterruptedError` itself takes the same path."""
        if stop.is_set():  # stop() was called: what was not read was not asked for
            logger.info("source %s ended after stop(): %s", source.describe(), error)
            return
        if isinstance(error, StreamInterruptedError) and error.stream_time is not None:
            last_time = error.stream_time  # the source knows where its data ended (e.g. between sampled frames)
        where = "before any frame" if last_time is None else f"at {last_time} s"
        logger.error("source %s failed %s: %s", source.describe(), where, error)
        with self._lock:
            self._error = f"{type(error).__name__}: {error}"
            self._failed_at = last_time

    def _ingest(self, backlog: FrameBacklog, stop: threading.Event) -> None:
        """Ingest thread: backlog -> preprocessing -> vision tower -> memory, until the backlog is closed."""
        try:
            while True:
                batch = backlog.take(self.max_batch)
                if batch is None:
                    break
                if stop.is_set():
                    with self._lock:
                        self._dropped += len(batch) + backlog.clear()
                    break
                began = time.perf_counter()
                ingested = self._ingest_batch(batch, stop)
                with self._lock:
                    self._work.append((ingested, time.perf_counter() - began))
        except BaseException as error:  # a bug here must not leave the session hanging
            logger.exception("ingest thread failed")
            with self._lock:
                self._error = f"{type(error).__name__}: {error}"
                self._failed_at = self._view.stream_time
        finally:
            self._end_run(stop)

    def _end_run(self, stop: threading.Event) -> None:
        """running/stopping -> finished, stopped or failed, once every `snapshot_at` future is settled (so
        `wait()` returning means they are). Futures are settled outside the lock: their callbacks may call the
        session; one registered meanwhile is settled in the next round."""
        while True:
            with self._changed:
                pending, self._checkpoints = self._checkpoints, []
                ending = self._ending(stop)
                if not pending:
                    self._state = ending[0]
                    self._changed.notify_all()
                    return
            for timestamp, future in pending:
                _settle(future, timestamp, *ending)

    def _ending(self, stop: threading.Event | None = None) -> tuple[str, StreamSnapshot, str | None, float | None]:
        """`(state, last snapshot, error, failed_at)` of the stream that ended (lock held)."""
        if stop is None:
            state = self._state
        else:
            state = "stopped" if stop.is_set() else ("failed" if self._error is not None else "finished")
        return state, self._view, self._error, self._failed_at

    def _ingest_batch(self, frames: list, stop: threading.Event) -> int:
        """Encode `frames` in one vision call, then add them to the memory one by one. Returns frames ingested."""
        pixels, frames = self._preprocess(frames)
        if not frames:
            return 0
        try:
            with torch.no_grad():
                features = self.model.get_frame_features(pixels.unsqueeze(0))  # [1, T, P_spa^2, D]
        except Exception:
            logger.exception("vision tower failed on %d frames; they are skipped", len(frames))
            with self._lock:
                self._failed += len(frames)
            return 0
        ingested = 0
        for index, frame in enumerate(frames):
            if stop.is_set():  # stop() waits for this thread: do not add more after it was called
                with self._lock:
                    self._dropped += len(frames) - index
                break
            self._resolve_checkpoints(before=frame.timestamp)
            try:
                self.model.update_memory_from_features(features[:, index : index + 1], self.memory)
            except Exception:
                logger.exception("memory update failed on the frame at %.3f s; it is skipped", frame.timestamp)
                with self._lock:
                    self._failed += 1
                continue
            ingested += 1
            with self._changed:
                self._view = view = StreamSnapshot(self.memory.snapshot(), frame.timestamp)
                self._ingested += 1
                self._changed.notify_all()
            self._tell_frame(view)
        return ingested

    def _tell_frame(self, view: StreamSnapshot) -> None:
        if self._on_frame is not None:
            try:
                self._on_frame(view)
            except Exception:
                logger.exception("on_frame failed at %.3f s (ignored)", view.stream_time)

    def _preprocess(self, frames: list) -> tuple[torch.Tensor | None, list]:
        """CLIP preprocessing of a batch -> `[T, 3, H, W]` and the frames kept; a bad frame is logged,
        counted and left out."""
        try:
            return self._pixels([frame.image for frame in frames]), frames
        except Exception:
            pass  # find the bad frame(s) one by one
        kept, pixels = [], []
        for frame in frames:
            try:
                pixels.append(self._pixels([frame.image]))
                kept.append(frame)
            except Exception as error:
                logger.warning("bad frame at %.3f s skipped: %s", frame.timestamp, error)
                with self._lock:
                    self._failed += 1
        return (torch.cat(pixels) if pixels else None), kept

    def _pixels(self, images: list) -> torch.Tensor:
        """`[T, 3, H, W]` for images the reader has checked (`check_frame`), through the processor's entry point."""
        return self.processor.preprocess_frames(images, return_tensors="pt")

    def _resolve_checkpoints(self, before: float) -> None:
        """Hand out the snapshots asked for times earlier than the frame about to be added."""
        with self._lock:
            due = [item for item in self._checkpoints if item[0] + _TIME_EPSILON < before]
            if not due:
                return
            self._checkpoints = [item for item in self._checkpoints if item not in due]
            view = self._view
        for _, future in due:
            _resolve(future, view)

    def _count_question(self, failed: bool) -> None:
        with self._lock:
            if failed:
                self._question_failures += 1
            else:
                self._answered += 1

    def _ensure_warm(self) -> None:
        """Run the model once before threads share it (`warm_up.ensure_warm`: once per model and process)."""
        if self._warm_up:
            ensure_warm(self.model, self.processor)


def _settle(
    future: Future, timestamp: float, state: str, view: StreamSnapshot, error: str | None, failed_at: float | None
) -> None:
    """Settle a `snapshot_at(timestamp)` future of a stream that ended in `state` with `view` as its memory."""
    if state == "finished":  # the source was exhausted: the snapshot holds every frame
        ended = view.stream_time is None or view.stream_time + _TIME_EPSILON < timestamp
        _resolve(future, replace(view, stream_ended=True) if ended else view)
    elif state == "failed":
        where = "before any frame" if failed_at is None else f"at {failed_at} s"
        _resolve(
            future, error=StreamInterruptedError(f"the stream failed {where}, before {timestamp} s: {error}", failed_at)
        )
    else:
        _resolve(future, error=RuntimeError(f"the stream was stopped before reaching {timestamp} s"))


def _resolve(future: Future, result=None, error: BaseException | None = None) -> None:
    """Set a future's result or exception, unless its caller has cancelled it (that must not end the stream)."""
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass
