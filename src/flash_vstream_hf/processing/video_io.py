"""Video decoding for Flash-VStream: frames sampled by timestamp at a target fps (or `num_frames` evenly spaced
ones), decoded one at a time.

decord is used when it is installed, PyAV otherwise (or as asked). Both backends select the same frames: the
first frame whose timestamp reaches each target time `k / fps`, measured from the first frame, which handles
variable-frame-rate files. Videos are local paths, `file://` URLs (either backend) or `http(s)://` URLs (PyAV).
Decoder imports are lazy so this module loads without either installed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

BACKENDS = ("decord", "pyav")
URL_SCHEMES = ("http", "https")  # opened by PyAV (FFmpeg); file:// URLs are mapped to local paths
_TIME_EPSILON = 1e-6  # seconds; absorbs rounding of pts * time_base
_URL_TIMEOUT = 30.0  # seconds PyAV waits when opening, and for each read of, an HTTP video


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


def evenly_spaced_indices(total: int, num_frames: int) -> list[int]:
    """`num_frames` indices spread evenly over `total` frames, `floor(k * total / num_frames)`, as transformers'
    video processors sample `num_frames`."""
    if not (isinstance(num_frames, int) and num_frames >= 1):
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    if num_frames > total:
        raise ValueError(f"cannot sample {num_frames} frames from a video of {total} frames")
    return [k * total // num_frames for k in range(num_frames)]


def resolve_source(path: str | os.PathLike) -> tuple[str, bool]:
    """`(location, is_url)`: a local path (`file://` URLs mapped to one) or an `http(s)://` URL.

    Raises `ValueError` for any other URL scheme (live streams belong to the streaming runtime).
    """
    path = os.fspath(path)
    if "://" not in path:
        return path, False
    parts = urllib.parse.urlsplit(path)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URLs must name a local file (file:///path/to/video.mp4), got {path}")
        return urllib.request.url2pathname(parts.path), False
    if scheme in URL_SCHEMES:
        return path, True
    raise ValueError(
        f"cannot read video {path}: URL scheme {scheme!r} is not supported; use a local path, a file:// or an "
        "http(s):// URL (live streams go through StreamingSession)"
    )


def iter_video_frames(
    path: str | os.PathLike,
    fps: float | None = 1.0,
    backend: str | None = None,
    num_frames: int | None = None,
) -> Iterator[VideoFrame]:
    """Yield the frames of a video sampled at `fps` (every frame when `None`), one decoded frame at a time.

    Args:
        path: a local path, a `file://` URL or an `http(s)://` URL (decoded with PyAV).
        fps: frames per second, selected by timestamp.
        backend: `"decord"`, `"pyav"` or `None` for the first installed (PyAV for URLs).
        num_frames: instead of `fps`, this many frames evenly spaced over the whole video (by frame index).

    Raises `FileNotFoundError` for a missing file and `ValueError` for a file that cannot be decoded, holds no
    video frame or has fewer than `num_frames` frames.
    """
    source, is_url = resolve_source(path)
    if not is_url and not os.path.isfile(source):
        raise FileNotFoundError(f"video file not found: {source}")
    backend = _backend_for(source, is_url, backend)
    select = _frame_selector(source, is_url, backend, fps, num_frames)
    frames = _iter_decord(source, select) if backend == "decord" else _iter_pyav(source, select, is_url)
    yielded = False
    for frame in frames:
        yielded = True
        yield frame
    if not yielded:
        raise ValueError(f"video {source} has no decodable frame")


def read_video_frames(
    path: str | os.PathLike, fps: float | None = 1.0, backend: str | None = None, num_frames: int | None = None
) -> list[VideoFrame]:
    """All frames of `iter_video_frames` in a list."""
    return list(iter_video_frames(path, fps, backend, num_frames))


def _backend_for(source: str, is_url: bool, backend: str | None) -> str:
    """The decoder for `source`: URLs need PyAV (decord reads local files only)."""
    if not is_url:
        return resolve_backend(backend)
    if backend == "decord":
        raise ValueError(f"decord cannot open URLs ({source}); use video_backend='pyav' or leave it unset")
    if backend is None and "pyav" not in available_backends():
        raise ImportError(f"decoding video URLs ({source}) needs PyAV: pip install 'flash-vstream-hf[video]'")
    return resolve_backend(backend or "pyav")


def _frame_selector(
    source: str, is_url: bool, backend: str, fps: float | None, num_frames: int | None
) -> Callable[[int, float], bool]:
    """`(frame index, timestamp) -> keep?`: by timestamp at `fps`, or `num_frames` evenly spaced indices (the
    frames are counted first, without decoding them)."""
    sampler = TimestampSampler(fps)  # validates fps even when num_frames replaces it
    if num_frames is None:
        return lambda index, time: sampler.accept(time)
    total = _count_decord(source) if backend == "decord" else _count_pyav(source, is_url)
    try:
        wanted = set(evenly_spaced_indices(total, num_frames))
    except ValueError as error:
        raise ValueError(f"{error} ({source})") from None
    return lambda index, time: index in wanted


def _open_pyav(source: str, is_url: bool):
    import av

    try:
        return av.open(source, timeout=_URL_TIMEOUT if is_url else None)
    except av.error.HTTPNotFoundError as error:
        raise FileNotFoundError(f"video not found: {source} ({error})") from error
    except (av.error.FFmpegError, OSError) as error:
        raise ValueError(f"cannot open video {source}: {error}") from error


def _count_pyav(source: str, is_url: bool) -> int:
    """Frames in the first video stream: the container's count when it records one, else the packets."""
    import av

    with _open_pyav(source, is_url) as container:
        if not container.streams.video:
            raise ValueError(f"{source} has no video stream")
        stream = container.streams.video[0]
        if stream.frames > 0:
            return stream.frames
        try:
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot read video {source}: {error}") from error


def _count_decord(path: str) -> int:
    import decord

    try:
        return len(decord.VideoReader(path, ctx=decord.cpu(0)))
    except (decord.DECORDError, RuntimeError) as error:
        raise ValueError(f"cannot open video {path}: {error}") from error


def _iter_pyav(source: str, select: Callable[[int, float], bool], is_url: bool = False) -> Iterator[VideoFrame]:
    import av

    with _open_pyav(source, is_url) as container:
        if not container.streams.video:
            raise ValueError(f"{source} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.time is not None else index / float(stream.average_rate or 1)
                start = time if start is None else start
                if select(index, time - start):
                    yield VideoFrame(time - start, frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot decode video {source}: {error}") from error


def _iter_decord(path: str, select: Callable[[int, float], bool]) -> Iterator[VideoFrame]:
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
        if select(index, time):
            try:
                image = reader[index].asnumpy()
            except (decord.DECORDError, RuntimeError) as error:
                raise ValueError(f"cannot decode frame {index} of video {path}: {error}") from error
            yield VideoFrame(time, image)
