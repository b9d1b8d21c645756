"""Frame sources for the streaming runtime: video files, live inputs, and iterators of frames.

Every source yields `VideoFrame(timestamp, image)` (seconds, `[H, W, 3]` uint8 RGB), sampled by timestamp at a
target fps (1 fps by default; variable frame rates handled by `TimestampSampler`) and decoded one frame at a
time. A recorded source can be paced at wall-clock speed (`speed=1.0` plays it as if it were live, `2.0` twice
as fast) or read as fast as possible (`speed=None`); a live source is paced by reality.

`FrameSource.live` tells the session which backlog policy to use by default: a file blocks when the model falls
behind (nothing is dropped), a live input drops the oldest waiting frames (and counts them).

Timestamps go through a `StreamClock`: one that is not a finite number is passed on as NaN (the session counts
that frame as bad and goes on), and one that goes back (two recordings concatenated, a camera that restarted)
starts a new segment, re-based so that stream time never goes back. A source that fails mid-stream raises; the
session reports it as a `StreamInterruptedError` with the stream time it reached.

`frame_image` (`check_frame` of `processing/frames_flash_vstream.py`, the one frame rule) and `downscale_frame`
are the session's checks at its boundary: every queued frame is an `[H, W, 3]` uint8 array, at most `max_side` on
its shorter side and `MAX_ASPECT_RATIO * max_side` on its longer.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from transformers.utils import logging

from ..processing.frames_flash_vstream import check_frame, to_rgb_array
from ..processing.video_io import TimestampSampler, TruncatedVideoError, VideoFrame, iter_video_frames, resolve_backend

logger = logging.get_logger(__name__)

_TIME_EPSILON = 1e-6  # seconds, as in video_io: absorbs pts * time_base rounding
MAX_ASPECT_RATIO = 4  # a queued frame's longer side is at most this many times the bound of its shorter side


class StreamInterruptedError(RuntimeError):
    """A stream that ended before its end: a decode error mid-file, a truncated file, a dropped connection, an
    iterator that raised. Sources may raise it; the session turns any failure of a source into one (its status
    says `failed`, with `failed_at`), and hands it to the `snapshot_at` futures the stream did not reach.

    Attributes:
        stream_time: seconds of stream time of the last frame read before the failure (None: before any).
    """

    def __init__(self, message: str, stream_time: float | None = None):
        super().__init__(message)
        self.stream_time = stream_time


class StreamClock:
    """Stream time from a source's own timestamps: finite, and never going back.

    `clock(raw)` returns seconds of stream time, or NaN when `raw` is not a finite number (the frame cannot be
    placed in time). A timestamp earlier than the previous one starts a new segment: the stream time carries on
    one frame interval (the last gap seen, `interval` before any) after the previous frame; `resets` counts them.
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.resets = 0
        self._offset = 0.0
        self._previous: tuple[float, float] | None = None  # (raw, stream time) of the previous frame

    def __call__(self, raw) -> float:
        seconds = _as_seconds(raw)
        if seconds is None:
            return math.nan
        if self._previous is not None:
            previous_raw, previous_time = self._previous
            if seconds + _TIME_EPSILON < previous_raw:
                self._start_segment(seconds, previous_raw, previous_time)
            elif seconds > previous_raw + _TIME_EPSILON:
                self.interval = seconds - previous_raw
        stream_time = seconds + self._offset
        self._previous = (seconds, stream_time)
        return stream_time

    def _start_segment(self, seconds: float, previous_raw: float, previous_time: float) -> None:
        self._offset = previous_time + self.interval - seconds
        self.resets += 1
        logger.warning(
            "timestamps went back from %.3f s to %.3f s: a new segment starts at %.3f s of stream time",
            previous_raw, seconds, seconds + self._offset,
        )  # fmt: skip


class FrameSource:
    """A stream of sampled frames. Subclasses implement `_open` (validate, raise clear errors) and `_frames`."""

    live: bool = False

    def __init__(self, fps: float | None = 1.0, speed: float | None = None):
        TimestampSampler(fps)  # validates fps
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number or None (as fast as possible), got {speed}")
        self.fps = fps
        self.speed = speed
        self._opened = False
        self._clock: StreamClock | None = None  # set by sources that re-base their timestamps

    @property
    def timestamp_resets(self) -> int:
        """Backward jumps of the source's timestamps, each re-based as a new segment (see `StreamClock`)."""
        return 0 if self._clock is None else self._clock.resets

    def open(self) -> None:
        """Open the source now, so a missing file, a corrupt file or an unreachable URL fails at once."""
        if not self._opened:
            self._open()
            self._opened = True

    def frames(self, stop: threading.Event | None = None) -> Iterator[VideoFrame]:
        """The sampled frames, paced at `speed`; ends early (between frames) once `stop` is set."""
        self.open()
        stop = stop or threading.Event()
        try:
            for frame in _paced(self._frames(stop), self.speed, stop):
                if stop.is_set():
                    return
                yield frame
        finally:
            self.close()

    def close(self) -> None:
        """Release decoders and connections (the source cannot be iterated again)."""

    def describe(self) -> str:
        return type(self).__name__

    def _open(self) -> None:
        raise NotImplementedError

    def _frames(self, stop: threading.Event) -> Iterator[VideoFrame]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r}, fps={self.fps}, speed={self.speed})"


class FileSource(FrameSource):
    """A video file, decoded with decord or PyAV (`backend`, default: the first installed).

    `open()` decodes the first sampled frame, so a missing file, a file that is not a video, a file without a
    video stream and a file with zero frames all fail there with `FileNotFoundError` or `ValueError`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | None = 1.0,
        backend: str | None = None,
        speed: float | None = None,
        assume_fps: float | None = None,
    ):
        super().__init__(fps, speed)
        self.path = os.fspath(path)
        self.backend = backend
        self.assume_fps = assume_fps  # the real frame rate of a raw stream without timestamps (see iter_video_frames)
        self._iterator: Iterator[VideoFrame] | None = None
        self._first: VideoFrame | None = None

    def describe(self) -> str:
        return self.path

    def _open(self) -> None:
        self.backend = resolve_backend(self.backend)
        self._iterator = iter_video_frames(self.path, fps=self.fps, backend=self.backend, assume_fps=self.assume_fps)
        self._first = next(self._iterator)  # iter_video_frames raises ValueError for a file with no frame

    def _frames(self, stop: threading.Event) -> Iterator[VideoFrame]:
        first, self._first = self._first, None
        yield first
        try:
            yield from self._iterator
        except TruncatedVideoError as error:  # every decodable frame was delivered: the loss must still show
            raise StreamInterruptedError(str(error), stream_time=error.stopped_at) from error

    def close(self) -> None:
        if self._iterator is not None:
            self._iterator.close()  # closes the decoder's container


class LiveSource(FrameSource):
    """A live input PyAV (FFmpeg) can open: an `rtsp://`, `http(s)://`, `udp://`, `tcp://`... URL, or a camera
    device with its input format (`/dev/video0` with `format="v4l2"` on Linux, `"0"` with `"avfoundation"` on
    macOS, `"video=NAME"` with `"dshow"` on Windows).

    Timestamps are the stream's presentation times from the first frame on (the arrival time when the input
    has none). Every frame is decoded, as codecs require; only sampled frames are converted to RGB.

    Args:
        url: the input.
        fps: frames per second to keep.
        format: FFmpeg input format (`"v4l2"`, `"avfoundation"`, `"dshow"`, ...); guessed from the URL if `None`.
        options: FFmpeg options, e.g. `{"rtsp_transport": "tcp"}` or `{"video_size": "640x480"}`.
        timeout: seconds to wait when opening, and for each read, before the input counts as dead.
        io_open: opens every input FFmpeg reads (PyAV's `io_open`); `guarded_http.GuardedOpener` for a
            stranger's URL.
        name: what the source is called in messages (default: the URL).
    """

    live = True

    def __init__(
        self,
        url: str,
        fps: float | None = 1.0,
        format: str | None = None,
        options: dict[str, str] | None = None,
        timeout: float = 10.0,
        io_open: Callable | None = None,
        name: str | None = None,
    ):
        super().__init__(fps, speed=None)
        self.url = str(url)
        self.format = format
        self.options = dict(options or {})
        self.timeout = timeout
        self.io_open = io_open
        self.name = name or self.url
        self._container = None

    def describe(self) -> str:
        return self.name if self.format is None else f"{self.name} ({self.format})"

    def _open(self) -> None:
        import av

        try:
            self._container = av.open(
                self.url,
                format=self.format,
                options=self.options,
                timeout=(self.timeout, self.timeout),
                io_open=self.io_open,
            )
        except (av.error.FFmpegError, OSError) as error:
            raise ConnectionError(f"cannot open live source {self.describe()}: {error}") from error
        if not self._container.streams.video:
            self.close()
            raise ValueError(f"live source {self.describe()} has no video stream")

    def _frames(self, stop: threading.Event) -> Iterator[VideoFrame]:
        import av

        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        sampler = TimestampSampler(self.fps)
        self._clock = clock = StreamClock(1.0 / (self.fps or 30.0))  # a restarted stream is a new segment
        start = wall_start = None
        count = 0
        try:
            for frame in self._container.decode(stream):
                if stop.is_set():
                    return
                now = time.monotonic()
                wall_start = now if wall_start is None else wall_start
                if frame.time is not None:
                    start = frame.time if start is None else start
                    timestamp = clock(frame.time - start)
                else:
                    timestamp = clock(now - wall_start)
                if math.isfinite(timestamp) and sampler.accept(timestamp):
                    count += 1
                    yield VideoFrame(timestamp, frame.to_ndarray(format="rgb24"))
        except (av.error.FFmpegError, OSError) as error:
            raise ConnectionError(f"live source {self.describe()} failed after {count} frames: {error}") from error

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class IteratorSource(FrameSource):
    """Any iterable of frames: PIL images or `[H, W, 3]` uint8 arrays, `(timestamp, frame)` pairs, or
    `VideoFrame`s.

    Frames without a timestamp are stamped `index / frame_rate`; with no `frame_rate` they are taken as already
    sampled at `fps` (every one is kept), or stamped with their arrival time when `live=True` (a camera
    callback, a queue fed by another thread). Images are checked by the session before they are queued, so a bad
    frame is counted and skipped without ending the stream. A timestamp that is not a finite number (NaN, inf,
    a string) is yielded as NaN, unsampled, for the consumer to count; timestamps that go back start a new
    segment (see `StreamClock`), so frames of a second recording appended to a first are kept.
    """

    def __init__(
        self,
        frames: Iterable,
        fps: float | None = 1.0,
        frame_rate: float | None = None,
        live: bool = False,
        speed: float | None = None,
        name: str = "frames",
    ):
        super().__init__(fps, speed)
        if frame_rate is not None and not (frame_rate > 0 and math.isfinite(frame_rate)):
            raise ValueError(f"frame_rate must be a positive number, got {frame_rate}")
        if not isinstance(frames, Iterable):
            raise TypeError(f"frames must be an iterable of images, got {type(frames).__name__}")
        self.frame_rate = frame_rate if frame_rate is not None else (None if live else fps or 1.0)
        self.live = live
        self.name = name
        self._source = frames
        self._iterator: Iterator | None = None

    def describe(self) -> str:
        return self.name

    def _open(self) -> None:
        self._iterator = iter(self._source)

    def _frames(self, stop: threading.Event) -> Iterator[VideoFrame]:
        sampler = TimestampSampler(self.fps)
        self._clock = clock = StreamClock(1.0 / (self.frame_rate or self.fps or 1.0))
        wall_start = time.monotonic()
        for index, item in enumerate(self._iterator):
            raw, image = self._split(index, item, wall_start)
            timestamp = clock(raw)
            if not math.isfinite(timestamp):
                yield VideoFrame(math.nan, image)  # unplaceable: the session counts it as a bad frame
            elif sampler.accept(timestamp):
                yield VideoFrame(timestamp, to_rgb_array(image))

    def _split(self, index: int, item, wall_start: float) -> tuple:
        """`(raw timestamp, image)` of one item of the iterable."""
        if isinstance(item, VideoFrame):
            return item.timestamp, item.image
        if isinstance(item, tuple) and len(item) == 2:
            return item
        if self.frame_rate is None:
            return time.monotonic() - wall_start, item
        return index / self.frame_rate, item

    def close(self) -> None:
        # the frames were all read by now: a failing close() of the caller's iterator loses nothing
        try:
            if hasattr(self._iterator, "close"):
                self._iterator.close()
        except Exception as error:
            logger.warning("closing the frame iterator %s failed: %s", self.name, error)


def open_source(
    source,
    fps: float | None = 1.0,
    speed: float | None = None,
    backend: str | None = None,
    input_format: str | None = None,
    options: dict[str, str] | None = None,
) -> FrameSource:
    """A `FrameSource` for `source`: a `FrameSource` (returned as is), a video file path, a URL
    (`scheme://...`), a camera device (`/dev/videoN`, or any input with `input_format`), or an iterable of
    frames. `speed` paces files and iterators; a live input is paced by reality and ignores it."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        spec = os.fspath(source)
        is_device = spec.startswith("/dev/video")
        if "://" in spec or is_device or input_format is not None:
            fmt = input_format or ("v4l2" if is_device else None)
            return LiveSource(spec, fps=fps, format=fmt, options=options)
        return FileSource(spec, fps=fps, backend=backend, speed=speed)
    if isinstance(source, Iterable) and not isinstance(source, (bytes, dict)):
        return IteratorSource(source, fps=fps, speed=speed)
    raise TypeError(
        f"source must be a video file path, a URL, a camera device, an iterable of frames or a FrameSource, "
        f"got {type(source).__name__}"
    )


# The stream's frame check is the processing package's (`check_frame`); kept under its earlier name.
frame_image = check_frame


def downscale_frame(image: np.ndarray, max_side: int) -> np.ndarray:
    """`[H, W, 3]` uint8 -> `[h, w, 3]` uint8 with `min(h, w) <= max_side` and `max(h, w) <= MAX_ASPECT_RATIO *
    max_side`, aspect ratio kept (bicubic, as CLIP resizes); a smaller frame is returned as a copy, so a source
    that reuses its buffer cannot change a queued frame. Bytes per frame: at most `3 * MAX_ASPECT_RATIO *
    max_side**2`."""
    height, width = image.shape[:2]
    scale = min(max_side / min(height, width), MAX_ASPECT_RATIO * max_side / max(height, width))
    if scale >= 1:
        return np.array(image, order="C")
    from PIL import Image

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap: a box reduction first, then bicubic; a 4000x3000 frame takes milliseconds, not a second
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(resized)


def _as_seconds(raw) -> float | None:
    """`raw` as finite seconds, or None (NaN, inf, None, strings and other non-numbers)."""
    if isinstance(raw, (str, bytes)):
        return None
    try:
        seconds = float(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None


def _paced(frames: Iterator[VideoFrame], speed: float | None, stop: threading.Event) -> Iterator[VideoFrame]:
    """Release each frame at `first_wall_time + (timestamp - first_timestamp) / speed`. A consumer that falls
    behind gets the late frames at once, so the stream catches up instead of drifting."""
    if speed is None:
        yield from frames
        return
    origin = None
    for frame in frames:
        now = time.monotonic()
        if origin is None:
            origin = now - frame.timestamp / speed
        delay = origin + frame.timestamp / speed - now
        if delay > 0 and stop.wait(delay):
            return
        yield frame


__all__ = [
    "FileSource",
    "FrameSource",
    "IteratorSource",
    "LiveSource",
    "StreamClock",
    "StreamInterruptedError",
    "downscale_frame",
    "frame_image",
    "open_source",
]
