"""Video decoding for Flash-VStream: frames sampled by timestamp at a target fps, decoded one at a time.

decord is used when it is installed, PyAV otherwise (or as asked). Both backends select the same frames: the
first frame whose timestamp reaches each target time `k / fps`, measured from the first frame, which handles
variable-frame-rate files. Decoder imports are lazy so this module loads without either installed.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

BACKENDS = ("decord", "pyav")
_TIME_EPSILON = 1e-6  # seconds; absorbs rounding of pts * time_base


@dataclass(frozen=True)
class VideoFrame:
    timestamp: float  # seconds since the first frame of the video
    image: np.ndarray  # [H, W, 3] uint8 RGB


def available_backends() -> list[str]:
    """The installed decoders, in order of preference."""
    modules = {"decord": "decord", "pyav": "av"}
    return [name for name in BACKENDS if importlib.util.find_spec(modules[name]) is not None]


def resolve_backend(backend: str | None = None) -> str:
    """`backend` if it is installed, else the first installed one; a clear error when none is."""
    installed = available_backends()
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"video backend must be one of {BACKENDS}, got {backend!r}")
        if backend not in installed:
            raise ImportError(f"video backend {backend!r} is not installed; pip install 'flash-vstream-hf[video]'")
        return backend
    if not installed:
        raise ImportError("decoding video files needs decord or PyAV: pip install 'flash-vstream-hf[video]'")
    return installed[0]


class TimestampSampler:
    """Accepts the first frame at or after each target time `0, 1/fps, 2/fps, ...` (all frames when fps is None).

    A frame that covers several target times (a gap in a variable-frame-rate file, or a source slower than
    `fps`) is taken once, so no frame is ever repeated.
    """

    def __init__(self, fps: float | None):
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.interval = None if fps is None else 1.0 / fps
        self.next_time = 0.0

    def accept(self, timestamp: float) -> bool:
        if self.interval is None:
            return True
        if timestamp + _TIME_EPSILON < self.next_time:
            return False
        self.next_time = (math.floor(timestamp / self.interval + _TIME_EPSILON) + 1) * self.interval
        return True


def iter_video_frames(path: str | os.PathLike, fps: float | None = 1.0, backend: str | None = None) -> Iterator[VideoFrame]:
    """Yield the frames of a video file sampled at `fps` (every frame when `None`), one decoded frame at a time.

    Raises `FileNotFoundError` for a missing file and `ValueError` for a file that cannot be decoded or holds
    no video frame.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    sampler = TimestampSampler(fps)
    backend = resolve_backend(backend)
    frames = _iter_decord(path, sampler) if backend == "decord" else _iter_pyav(path, sampler)
    yielded = False
    for frame in frames:
        yielded = True
        yield frame
    if not yielded:
        raise ValueError(f"video {path} has no decodable frame")


def read_video_frames(
    path: str | os.PathLike, fps: float | None = 1.0, backend: str | None = None
) -> list[VideoFrame]:
    """All frames of `iter_video_frames` in a list."""
    return list(iter_video_frames(path, fps, backend))


def _iter_pyav(path: str, sampler: TimestampSampler) -> Iterator[VideoFrame]:
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as error:
        raise ValueError(f"cannot open video {path}: {error}") from error
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.time is not None else index / float(stream.average_rate or 1)
                start = time if start is None else start
                if sampler.accept(time - start):
                    yield VideoFrame(time - start, frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot decode video {path}: {error}") from error


def _iter_decord(path: str, sampler: TimestampSampler) -> Iterator[VideoFrame]:
    import decord

    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
    except (decord.DECORDError, RuntimeError) as error:
        raise ValueError(f"cannot open video {path}: {error}") from error
    if len(reader) == 0:
        return
    starts = reader.get_frame_timestamp(range(len(reader)))[:, 0]
    starts = starts - starts[0]
    for index, time in enumerate(starts.tolist()):
        if sampler.accept(time):
            try:
                image = reader[index].asnumpy()
            except (decord.DECORDError, RuntimeError) as error:
                raise ValueError(f"cannot decode frame {index} of video {path}: {error}") from error
            yield VideoFrame(time, image)
