"""`StreamingSession`: ingest a video stream in the background and answer questions about it at any moment.

One process, two background threads per session:

    source -> [reader thread: decode, sample, pace] -> bounded backlog -> [ingest thread: CLIP preprocessing,
    vision tower on everything waiting (up to `max_batch` frames), STAR consolidation frame by frame]

and questions from any thread, each reading an immutable memory snapshot while ingest goes on.

The vision tower runs on batches (the expensive part, and what lets ingest catch up when it falls behind), but
frames enter the memory one at a time, so the memory is the same whatever the batching and however fast the
machine is: asking at a timestamp gives the answer that frame-by-frame streaming of the same frames gives.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch
from transformers.utils import logging

from ..modeling import FlashVStreamMemory
from .answering import Answer, AnswerStream, NoFramesError, StreamSnapshot, TimedTextStreamer, generate_answer
from .backlog import BACKLOG_POLICIES, FrameBacklog
from .sources import FrameSource, open_source

logger = logging.get_logger(__name__)

_TIME_EPSILON = 1e-6  # seconds, as in video_io: absorbs pts * time_base rounding

# One lock per loaded model, for its warm-up: the first forward of a module may change it (bitsandbytes repacks
# 4-bit weights on CPU, kernels get selected), so it must not run from two threads at once. After the warm-up,
# sessions sharing the model run the vision tower and generate() concurrently: both are pure forwards.
_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WARM_MODELS: weakref.WeakSet = weakref.WeakSet()
_REGISTRY_LOCK = threading.Lock()


@dataclass(frozen=True)
class StreamStatus:
    """Counters of a session. Once a stream has ended, `frames_in = frames_ingested + frames_dropped +
    frames_failed`."""

    state: str  # "idle", "running", "finished", "stopped" or "failed"
    source: str | None
    stream_time: float | None  # timestamp of the newest frame in memory (current source)
    frames_in: int  # sampled frames read from the sources
    frames_ingested: int
    frames_dropped: int  # skipped by the "drop" backlog policy (or discarded by stop())
    frames_failed: int  # bad frames, logged and skipped
    backlog: int  # frames waiting for the ingest thread
    # frames per second the ingest thread gets through while busy (preprocessing + vision + memory, recent
    # batches): its capacity. Above the source's sampled fps, ingest keeps up with a live stream.
    ingest_fps: float | None
    memory_frames: int  # frames the memory has seen, a resumed memory's included
    memory_tokens: int
    memory_bytes: int
    questions_answered: int
    questions_failed: int
    error: str | None  # why the last source ended early, if it did

    def line(self) -> str:
        """One line for a terminal status bar."""
        time_text = "--" if self.stream_time is None else _clock(self.stream_time)
        fps_text = "--" if self.ingest_fps is None else f"{self.ingest_fps:.1f}"
        parts = [
            f"{self.state}",
            f"t={time_text}",
            f"frames={self.frames_ingested}",
            f"ingest={fps_text} fps",
            f"memory={self.memory_tokens} tokens/{_size(self.memory_bytes)}",
        ]
        if self.backlog:
            parts.append(f"backlog={self.backlog}")
        if self.frames_dropped:
            parts.append(f"dropped={self.frames_dropped}")
        if self.frames_failed:
            parts.append(f"bad={self.frames_failed}")
        if self.error:
            parts.append(f"error: {self.error}")
        return " | ".join(parts)


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
        generation_kwargs: defaults for `generate()` in `ask`, e.g. `{"max_new_tokens": 128}`.
        warm_up: run the model once per process before using it from threads (see `_MODEL_LOCKS`).

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
        generation_kwargs: dict | None = None,
        warm_up: bool = True,
    ):
        if backlog is not None and backlog not in BACKLOG_POLICIES:
            raise ValueError(f"backlog must be one of {BACKLOG_POLICIES} or None, got {backlog!r}")
        if max_batch < 1 or max_backlog < 1:
            raise ValueError(f"max_batch and max_backlog must be >= 1, got {max_batch} and {max_backlog}")
        self.model = model
        self.processor = processor
        if memory is None:
            memory = model.new_memory(1)
        model.model.check_memory(memory)
        if memory.batch_size != 1:
            raise ValueError(f"a session streams one video: memory must have batch size 1, got {memory.batch_size}")
        self.memory = memory
        self.backlog_policy = backlog
        self.max_backlog = max_backlog
        self.max_batch = max_batch
        self.generation_kwargs = {"max_new_tokens": 256, **(generation_kwargs or {})}
        self._warm_up = warm_up

        self._view = StreamSnapshot(memory.snapshot(), None)  # replaced (atomically) after every frame
        self._state = "idle"
        self._source: FrameSource | None = None
        self._backlog: FrameBacklog | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._ingester: threading.Thread | None = None
        self._done = threading.Event()
        self._done.set()
        self._checkpoints: list[tuple[float, Future]] = []
        self._lock = threading.Lock()  # counters, checkpoints, state
        self._frames_in = self._ingested = self._dropped = self._failed = self._backlog_dropped = 0
        self._answered = self._question_failures = 0
        self._work: deque[tuple[int, float]] = deque(maxlen=16)  # (frames, seconds) of recent ingest batches
        self._error: str | None = None
        self._frame_count = threading.Condition(self._lock)

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
        the session as it was. A finished session can start another source: its memory carries on.
        """
        if self.running:
            raise RuntimeError("the session is already streaming; stop() it or wait() for it first")
        source = open_source(source, fps=fps, speed=speed, backend=backend, input_format=input_format)
        source.open()
        try:
            self._ensure_warm()
        except BaseException:
            source.close()
            raise
        policy = self.backlog_policy or ("drop" if source.live else "block")
        with self._lock:
            self._source = source
            if self._backlog is not None:
                self._backlog_dropped += self._backlog.dropped
            self._backlog = FrameBacklog(self.max_backlog, policy)
            self._stop = threading.Event()
            self._done = threading.Event()
            self._error = None
            self._state = "running"
            self._view = StreamSnapshot(self.memory.snapshot(), None)
            self._work.clear()
        # The threads get this run's source, backlog and stop event: a reader still blocked in a live read
        # after stop() must not touch the next run's.
        run = (self._backlog, self._stop)
        self._reader = threading.Thread(
            target=self._read, args=(source, *run), name="flash-vstream-reader", daemon=True
        )
        self._ingester = threading.Thread(target=self._ingest, args=run, name="flash-vstream-ingest", daemon=True)
        self._reader.start()
        self._ingester.start()
        return self

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the source is exhausted and every frame read is ingested. False on timeout."""
        return self._done.wait(timeout)

    def wait_for_frames(self, count: int = 1, timeout: float | None = None) -> bool:
        """Wait until the memory holds at least `count` frames (False on timeout or if the stream ended first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._frame_count:
            while self._view.frames < count:
                if self._done.is_set():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._frame_count.wait(0.1 if remaining is None else min(remaining, 0.1))
            return True

    def stop(self, timeout: float | None = None) -> None:
        """Stop reading the source; frames already waiting are discarded (counted as dropped). The memory and
        everything answered so far stay; `start()` may be called again.

        Waits (up to `timeout` seconds) for the ingest thread to finish the vision call it may be in, so the
        memory no longer changes once `stop()` returns. The reader thread is not waited for: a live input may be
        blocked in a read until its timeout; it only ends its source then.
        """
        self._stop.set()
        if self._backlog is not None:
            self._backlog.close()
        if self._ingester is not None and self._ingester is not threading.current_thread():
            self._ingester.join(timeout)
            if self._ingester.is_alive():
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
        point, or at the end of the stream. Ingest goes on meanwhile."""
        future: Future = Future()
        with self._lock:
            current = self._view.stream_time
            if self._state == "running" and current is not None and current > timestamp + _TIME_EPSILON:
                raise ValueError(f"the stream is already at {current:.3f} s, past {timestamp} s")
            self._checkpoints.append((timestamp, future))
            self._checkpoints.sort(key=lambda item: item[0])
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
        """`snapshot`, or the memory now; a question about an empty memory fails at once (spec bug B11)."""
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
            view, backlog = self._view, self._backlog
            return StreamStatus(
                state=self._state,
                source=None if self._source is None else self._source.describe(),
                stream_time=view.stream_time,
                frames_in=self._frames_in,
                frames_ingested=self._ingested,
                frames_dropped=self._dropped + self._backlog_dropped + (backlog.dropped if backlog is not None else 0),
                frames_failed=self._failed,
                backlog=len(backlog) if backlog is not None else 0,
                ingest_fps=frames / seconds if seconds > 0 else None,
                memory_frames=view.frames,
                memory_tokens=view.memory.get_seq_length(),
                memory_bytes=view.memory.nbytes,
                questions_answered=self._answered,
                questions_failed=self._question_failures,
                error=self._error,
            )

    # -- background threads ---------------------------------------------------------------------------------------

    def _read(self, source: FrameSource, backlog: FrameBacklog, stop: threading.Event) -> None:
        """Reader thread: source -> backlog."""
        try:
            with contextlib.closing(source.frames(stop)) as frames:  # closing ends the decoder at once
                for frame in frames:
                    with self._lock:
                        self._frames_in += 1
                    if not backlog.put(frame, stop):
                        with self._lock:
                            self._dropped += 1
                        break
        except Exception as error:
            logger.error("source %s failed: %s", source.describe(), error)
            if not stop.is_set():
                with self._lock:
                    self._error = f"{type(error).__name__}: {error}"
        finally:
            backlog.close()

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
        finally:
            with self._lock:
                if self._error is None or stop.is_set():
                    finished = "stopped" if stop.is_set() else "finished"
                else:
                    finished = "failed"
                self._state = finished
                pending, self._checkpoints = self._checkpoints, []
            for timestamp, future in pending:
                if finished == "finished":
                    future.set_result(self._view)  # the stream ended before `timestamp`: it holds all frames
                else:
                    future.set_exception(RuntimeError(f"the stream {finished} before reaching {timestamp} s"))
            self._done.set()
            with self._frame_count:
                self._frame_count.notify_all()

    def _ingest_batch(self, frames: list, stop: threading.Event) -> int:
        """Encode `frames` in one vision call, then add them to the memory one by one. Returns frames ingested."""
        pixels, frames = self._preprocess(frames)
        if not frames:
            return 0
        try:
            with torch.no_grad():
                features = self.model.model.get_frame_features(pixels.unsqueeze(0))  # [1, T, P_spa^2, D]
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
            with self._frame_count:
                self._view = StreamSnapshot(self.memory.snapshot(), frame.timestamp)
                self._ingested += 1
                self._frame_count.notify_all()
        return ingested

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
        for image in images:
            _check_image(image)
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

    def _resolve_checkpoints(self, before: float) -> None:
        """Hand out the snapshots asked for times earlier than the frame about to be added."""
        with self._lock:
            due = [item for item in self._checkpoints if item[0] + _TIME_EPSILON < before]
            if not due:
                return
            self._checkpoints = [item for item in self._checkpoints if item not in due]
            view = self._view
        for _, future in due:
            future.set_result(view)

    def _count_question(self, failed: bool) -> None:
        with self._lock:
            if failed:
                self._question_failures += 1
            else:
                self._answered += 1

    def _ensure_warm(self) -> None:
        """Run the model once (one blank frame, one generated token) before threads share it."""
        if not self._warm_up:
            return
        with _REGISTRY_LOCK:
            lock = _MODEL_LOCKS.setdefault(self.model, threading.Lock())
        with lock:
            if self.model in _WARM_MODELS:
                return
            size = self.model.config.vision_config.image_size
            with torch.no_grad():
                scratch = self.model.update_memory(torch.zeros(1, 1, 3, size, size))
            snapshot = StreamSnapshot(scratch, 0.0)
            generate_answer(self.model, self.processor, "warm up", snapshot, {"max_new_tokens": 1}, time.perf_counter())
            _WARM_MODELS.add(self.model)


def _check_image(image) -> None:
    """Reject what CLIP preprocessing would misread, with a message naming the problem."""
    if hasattr(image, "getbands"):
        return
    if not isinstance(image, np.ndarray):
        raise TypeError(f"a frame must be a PIL image or an [H, W, 3] uint8 array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"a frame must be an [H, W, 3] array, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"a frame must be uint8 RGB, got dtype {image.dtype}")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:d}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes:02d}:{secs:04.1f}"


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"
