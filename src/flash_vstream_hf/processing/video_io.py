"""Video decoding for Flash-VStream: frames sampled by timestamp at a target fps (or `num_frames` evenly spaced
ones), decoded one at a time.

decord is used when it is installed, PyAV otherwise (or as asked). Both backends select the same frames: the
first frame whose timestamp reaches each target time `k / fps`, measured from the first frame, which handles
variable-frame-rate files. Videos are local paths, `file://` URLs (either backend) or `http(s)://` URLs (PyAV).
Decoder imports are lazy so this module loads without either installed.

Damaged and unusual files:

- Truncated files: every frame that decodes is delivered, then `TruncatedVideoError` is raised. A file counts as
  truncated when decoding fails after its first frame, when its last frame ends more than
  `max(TRUNCATION_TOLERANCE_S, 2 frame intervals)` before the end its container declares (MP4, Matroska, AVI...),
  or when it is an MPEG-TS whose last packet is cut short. MPEG-TS declares no duration (FFmpeg estimates one from
  the timestamps that survived), so a TS cut on a packet boundary reads as a recording that stopped there.
- Still images (PNG, JPEG, WebP, BMP, TIFF, a one-frame GIF), whatever the file is named, are refused: pass them
  as a one-frame video (a list of frames).
- Every decoded frame must be a `[H, W, 3]` uint8 array of the size its stream declares.
- Raw elementary streams (`.h264`, `.m4v`, `.mjpeg`...) have no timestamps: their frames are timed `index / fps`
  at the caller's `assume_fps`, else at the frame rate their bitstream declares (logged, and flagged by
  `VideoFrame.time_source`), else refused.
- A timestamp earlier than the previous frame's (recordings concatenated with `cat`, whose timestamps restart)
  starts a new segment that continues one frame interval after the previous frame: nothing is dropped and the
  timeline never runs backwards.
- decord hands to PyAV (when installed, with a log line) the files it misreads: MPEG-TS/PS (it sorts their
  timestamps, interleaving concatenated recordings, and cannot decode H.264 in TS), raw streams, files it cannot
  open and files whose first frame it fails to decode or decodes malformed (it mangles frames under ~20 px
  wide). PyAV also reads the container's declarations (size, duration) for the checks above; with decord alone,
  frames are checked against the first one and truncation shows only as decoder errors or a cut TS packet.
- Files that would make the decoder open something else are refused (`UnsafeVideoError`) by both backends: HLS
  and DASH playlists, concat lists and IMF compositions (their entries may name any local file or internal URL),
  SDP descriptions (RTP sockets on the host), and any file referring to another input (demuxers.py). decord gets
  a file only after PyAV has opened it this way. Without PyAV, decord reads what it likes: install both.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

try:  # in the package, or loaded as remote code beside the processor
    from .demuxers import ReferenceRefused, demuxer_whitelist, only_this_file, refused_kind
except ImportError:  # a top-level module at the root of an exported repo, imported by handler.py
    from demuxers import ReferenceRefused, demuxer_whitelist, only_this_file, refused_kind

# stdlib logging (this module ships as remote code); in the package its logger follows transformers' verbosity
logger = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")
URL_SCHEMES = ("http", "https")  # opened by PyAV (FFmpeg); file:// URLs are mapped to local paths
TIME_SOURCES = ("timestamps", "bitstream_fps", "assume_fps")  # see VideoFrame.time_source
TRUNCATION_TOLERANCE_S = 1.0  # seconds a file may end early (at 1 fps sampling: at most one sample lost)
_TRUNCATION_TOLERANCE_FRAMES = 2  # ... or this many frame intervals, when longer (time-lapses)
_TIME_EPSILON = 1e-6  # seconds; absorbs rounding of pts * time_base
_URL_TIMEOUT = 30.0  # seconds PyAV waits when opening, and for each read of, an HTTP video
_AVFMT_NOTIMESTAMPS = 0x0080  # FFmpeg format flags (stable ABI values, PyAV's enums changed across versions)
_AVFMT_TS_DISCONT = 0x0200
_TS_PACKETS = ((188, 0), (192, 4), (204, 0))  # (packet size, sync byte offset): MPEG-TS, M2TS, TS with FEC
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


@dataclass(frozen=True)
class VideoFrame:
    timestamp: float  # seconds since the first frame of the video
    image: np.ndarray  # [H, W, 3] uint8 RGB
    # "timestamps": read from the file; "bitstream_fps" / "assume_fps": `index / fps` for a stream without
    # timestamps, at the rate its bitstream declares / the caller's `assume_fps`
    time_source: str = "timestamps"


class UnsafeVideoError(ValueError):
    """A file that would make the decoder open other inputs: a playlist, a concat list, an SDP description, a
    reference to another file. Neither decoder reads it."""


class TruncatedVideoError(ValueError):
    """The video stops before its declared end, or decoding failed part-way; every frame before was delivered.

    Attributes:
        path: the video.
        stopped_at: timestamp (seconds, as `VideoFrame.timestamp`) of the last good frame.
        expected_duration: seconds from the first frame to the end the file declares, or `None` when unknown.
        reason: what showed the truncation.
        frames: the frames read before, when `read_video_frames` raised it (else `None`).
    """

    def __init__(self, path: str, stopped_at: float, expected_duration: float | None = None, reason: str = ""):
        self.path, self.stopped_at, self.expected_duration, self.reason = path, stopped_at, expected_duration, reason
        self.frames: list[VideoFrame] | None = None
        of = "" if expected_duration is None else f" of {expected_duration:.1f} s"
        super().__init__(
            f"video {path} is truncated or damaged: it stops at {stopped_at:.1f} s{of} ({reason}); "
            "the frames up to there were delivered"
        )

    def __reduce__(self):
        # rebuild from the attributes (the default would call __init__ with the message alone)
        return type(self), (self.path, self.stopped_at, self.expected_duration, self.reason)


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
        if fps is not None:
            _check_rate("fps", fps)
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
    assume_fps: float | None = None,
) -> Iterator[VideoFrame]:
    """Yield the frames of a video sampled at `fps` (every frame when `None`), one decoded frame at a time.

    Args:
        path: a local path, a `file://` URL or an `http(s)://` URL (decoded with PyAV).
        fps: frames per second, selected by timestamp.
        backend: `"decord"`, `"pyav"` or `None` for the first installed (PyAV for URLs). decord hands the files
            it misreads to PyAV (see the module docstring).
        num_frames: instead of `fps`, this many frames evenly spaced over the whole video (by frame index).
        assume_fps: the real frame rate of a stream without timestamps (a raw `.h264`, `.m4v`...), which is
            otherwise timed at the rate its bitstream declares; files with timestamps ignore it.

    Raises `FileNotFoundError` for a missing file, `ValueError` for a file that cannot be decoded, is a still
    image, holds no video frame, has fewer than `num_frames` frames, decodes to malformed frames or has no
    timestamps and no declared frame rate, and `TruncatedVideoError` (a `ValueError`), after the last good
    frame, for a file that stops short.
    """
    source, is_url = resolve_source(path)
    if not is_url and not os.path.isfile(source):
        raise FileNotFoundError(f"video file not found: {source}")
    if assume_fps is not None:
        _check_rate("assume_fps", assume_fps)
    sampling = _Sampling(fps, num_frames, assume_fps)
    if _backend_for(source, is_url, backend) == "decord":
        frames = _iter_decord(source, sampling)
    else:
        frames = _iter_pyav(source, is_url, sampling)
    yielded = False
    for frame in frames:
        yielded = True
        yield frame
    if not yielded:
        raise ValueError(f"video {source} has no decodable frame")


def read_video_frames(
    path: str | os.PathLike,
    fps: float | None = 1.0,
    backend: str | None = None,
    num_frames: int | None = None,
    assume_fps: float | None = None,
) -> list[VideoFrame]:
    """All frames of `iter_video_frames` in a list; a `TruncatedVideoError` carries the frames read in `frames`."""
    frames: list[VideoFrame] = []
    try:
        frames.extend(iter_video_frames(path, fps, backend, num_frames, assume_fps))
    except TruncatedVideoError as error:
        error.frames = frames
        raise
    return frames


# -- what to decode -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sampling:
    fps: float | None
    num_frames: int | None
    assume_fps: float | None


@dataclass(frozen=True)
class _StreamInfo:
    """What the container and codec declare about the first video stream, read by PyAV before decoding."""

    format_name: str
    width: int
    height: int
    start: float  # seconds of stream time where the stream starts
    declared_end: float | None  # seconds of stream time where the container declares the stream ends
    frame_interval: float | None  # seconds, from the container's average frame rate
    bitstream_fps: float | None  # the frame rate the codec bitstream declares (H.264 SPS, MPEG-4 VOL, ...)
    raw: bool  # an elementary stream without timestamps
    discontinuous: bool  # a format whose timestamps may jump (MPEG-TS/PS)


@dataclass(frozen=True)
class _Clock:
    """How frames are timed: by the file's timestamps, or `index / fps` for a stream without any."""

    source: str = "timestamps"
    fps: float | None = None


@dataclass(frozen=True)
class _Decoded:
    """One decoded frame, before selection: its stream time and the RGB conversion, run only for kept frames."""

    time: float | None  # seconds of stream time; None when the frame has none
    duration: float | None  # seconds, when known
    image: Callable[[], np.ndarray]
    height: int  # the size the decoder declares for it
    width: int


class _DecodeError(Exception):
    """A decoder error while reading frames (truncation when it comes after a good frame)."""


class _DecordUnusable(Exception):
    """decord cannot read this file correctly (PyAV may)."""


def _check_rate(name: str, value: float) -> None:
    try:  # any real number type (numpy scalars included)
        valid = value > 0 and math.isfinite(value)
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _backend_for(source: str, is_url: bool, backend: str | None) -> str:
    """The decoder for `source`: URLs need PyAV (decord reads local files only)."""
    if not is_url:
        return resolve_backend(backend)
    if backend == "decord":
        raise ValueError(f"decord cannot open URLs ({source}); use video_backend='pyav' or leave it unset")
    if backend is None and "pyav" not in available_backends():
        raise ImportError(f"decoding video URLs ({source}) needs PyAV: pip install 'flash-vstream-hf[video]'")
    return resolve_backend(backend or "pyav")


def _frame_selector(source: str, sampling: _Sampling, count: Callable[[], int]) -> Callable[[int, float], bool]:
    """`(frame index, timestamp) -> keep?`: by timestamp at `fps`, or `num_frames` evenly spaced indices of the
    `count()` frames (counted without decoding them)."""
    sampler = TimestampSampler(sampling.fps)  # validates fps even when num_frames replaces it
    if sampling.num_frames is None:
        return lambda index, time: sampler.accept(time)
    try:
        wanted = set(evenly_spaced_indices(count(), sampling.num_frames))
    except ValueError as error:
        raise ValueError(f"{error} ({source})") from None
    return lambda index, time: index in wanted


def _clock_for(source: str, info: _StreamInfo | None, assume_fps: float | None) -> _Clock:
    """The file's timestamps, or for a raw stream `assume_fps`, else its bitstream's rate (never FFmpeg's 25)."""
    if info is None or not info.raw:
        return _Clock()
    if assume_fps is not None:
        return _Clock("assume_fps", assume_fps)
    if info.bitstream_fps is None:
        raise ValueError(
            f"video {source} is a raw {info.format_name} stream: it has no timestamps and its bitstream declares "
            "no frame rate; pass assume_fps=<the rate it was recorded at>"
        )
    logger.warning(
        "video %s is a raw %s stream with no timestamps: its frames are timed at the %g fps its bitstream "
        "declares; pass assume_fps= if it was recorded at another rate",
        source,
        info.format_name,
        info.bitstream_fps,
    )
    return _Clock("bitstream_fps", info.bitstream_fps)


# -- refusing still images --------------------------------------------------------------------------------------------


def _refuse_still_image(source: str, is_url: bool, info: _StreamInfo | None) -> None:
    """A still image given as a video (a PNG renamed `.mp4` would play as one frame) is refused; image files
    holding several frames (an animated GIF or PNG, an MJPEG stream) are videos."""
    kind = None if is_url else _sniff_image(source)
    if kind is None and info is not None and _is_image_format(info.format_name):
        kind = "still" if info.format_name == "image2" else info.format_name.removesuffix("_pipe").upper()
    if kind is None or (info is not None and _count_packets(source, is_url, limit=2) > 1):
        return
    raise ValueError(
        f"{source} is a {kind} image, not a video; pass a still image as a one-frame video: a list holding "
        "the image (videos=[[image]]) or a [1, height, width, 3] array"
    )


def _sniff_image(path: str) -> str | None:
    """The image format that the first bytes of `path` announce, or None."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for signature, name in _IMAGE_SIGNATURES if head.startswith(signature)), None)


def _is_image_format(format_name: str) -> bool:
    """FFmpeg's image demuxers: `image2` and the `*_pipe` ones (png_pipe, jpeg_pipe, ...)."""
    return format_name == "image2" or format_name.endswith("_pipe")


def _count_packets(source: str, is_url: bool, limit: int) -> int:
    """Video packets in `source`, counted up to `limit`."""
    import av

    count = 0
    with _open_pyav(source, is_url) as container:
        try:
            for packet in container.demux(_video_stream(container, source)):
                count += packet.size > 0
                if count >= limit:
                    break
        except av.error.FFmpegError:
            pass  # a damaged file holds the packets counted so far
    return count


# -- timing, checking and delivering frames (both backends) ------------------------------------------------------


class _Timeline:
    """Stream times -> `VideoFrame` timestamps: seconds since the first frame.

    A time earlier than the previous frame's (timestamps restarting in concatenated recordings) starts a new
    segment placed one frame interval after the previous frame. A stream without timestamps is timed
    `index / fps`.
    """

    def __init__(self, interval: float | None, fps: float | None = None):
        self.fixed = None if fps is None else 1.0 / fps
        self.interval = self.fixed or interval  # the latest gap between frames
        self.offset = 0.0  # timestamp - stream time, in the current segment
        self.first: float | None = None  # stream time of the first frame
        self.raw: float | None = None  # stream time of the latest frame
        self.last: float | None = None  # timestamp of the latest frame
        self.end: float | None = None  # timestamp where the latest frame ends
        self.segments = 0
        self.count = 0

    def place(self, raw: float | None, duration: float | None) -> float:
        """The timestamp of the next frame, at stream time `raw` (None: one interval after the previous one)."""
        if self.fixed is not None:
            raw, duration = self.count * self.fixed, self.fixed
        elif raw is None:
            raw = 0.0 if self.raw is None else self.raw + (self.interval or 0.0)
        if self.raw is None:
            self.first, self.offset, self.segments = raw, -raw, 1
        elif raw + _TIME_EPSILON < self.raw:
            self.offset = self.last + (self.interval or 0.0) - raw
            self.segments += 1
        elif raw > self.raw + _TIME_EPSILON and self.fixed is None:
            self.interval = raw - self.raw
        self.raw, self.count = raw, self.count + 1
        self.last = raw + self.offset
        self.end = self.last + (duration or self.interval or 0.0)
        return self.last

    def expected_duration(self, info: _StreamInfo | None) -> float | None:
        """Seconds from the first frame to the end the container declares (unknown across several segments)."""
        if info is None or info.declared_end is None or self.first is None or self.segments > 1:
            return None
        return info.declared_end - self.first


def _deliver(
    source: str,
    is_url: bool,
    decoded: Iterator[_Decoded],
    info: _StreamInfo | None,
    select: Callable[[int, float], bool],
    clock: _Clock,
) -> Iterator[VideoFrame]:
    """The kept frames of `decoded`, timed and checked; then `TruncatedVideoError` if the file stopped short."""
    timeline = _Timeline(info.frame_interval if info else None, clock.fps)
    last_good: float | None = None
    try:
        for index, item in enumerate(decoded):
            time = timeline.place(item.time, item.duration)
            if select(index, time):
                yield VideoFrame(time, _checked(item.image(), item, index, source), clock.source)
            last_good = time
    except _DecodeError as error:
        if last_good is None:
            raise ValueError(f"cannot decode video {source}: {error}") from error
        expected = timeline.expected_duration(info)
        raise TruncatedVideoError(source, last_good, expected, str(error)) from error
    _check_complete(source, is_url, info, timeline)


def _checked(image: np.ndarray, item: _Decoded, index: int, source: str) -> np.ndarray:
    """`image` if it is the `[H, W, 3]` uint8 frame its stream declares, else a `ValueError` naming the frame."""
    problem = _image_problem(image, item.height, item.width)
    if problem is not None:
        raise ValueError(f"frame {index} of video {source} decoded as {problem}; the file may be damaged")
    return image


def _image_problem(image: np.ndarray, height: int, width: int) -> str | None:
    """What is wrong with a decoded frame, or None for a `[height, width, 3]` uint8 array."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == (height, width, 3):
        return None
    shape = getattr(image, "shape", None)
    return f"an array of shape {shape} and dtype {getattr(image, 'dtype', type(image).__name__)}, not a " + (
        f"[{height}, {width}, 3] uint8 RGB image"
    )


def _check_complete(source: str, is_url: bool, info: _StreamInfo | None, timeline: _Timeline) -> None:
    """`TruncatedVideoError` if the frames end more than the tolerance before the declared end, or the file is
    an MPEG-TS whose last packet is cut."""
    if timeline.last is None:
        return  # no frame: iter_video_frames raises its own error
    expected = timeline.expected_duration(info)
    if not is_url and (info is None or info.format_name == "mpegts") and _ts_tail_is_cut(source):
        raise TruncatedVideoError(source, timeline.last, expected, "its last MPEG-TS packet is cut short")
    if expected is None:
        return
    interval = (info.frame_interval if info else None) or timeline.interval or 0.0
    if expected - timeline.end > max(TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRAMES * interval):
        reason = f"its frames end at {timeline.end:.2f} s, its container declares {expected:.2f} s"
        raise TruncatedVideoError(source, timeline.last, expected, reason)


def _ts_tail_is_cut(path: str) -> bool:
    """Whether `path` is an MPEG-TS (or M2TS) file whose size is not a whole number of its packets."""
    with open(path, "rb") as handle:
        head = handle.read(4 * 204 + 4)
    for size, offset in _TS_PACKETS:
        syncs = head[offset::size]
        if len(syncs) >= 2 and syncs.count(0x47) == len(syncs):
            return os.path.getsize(path) % size != 0
    return False


# -- PyAV -------------------------------------------------------------------------------------------------------------


def _iter_pyav(source: str, is_url: bool, sampling: _Sampling) -> Iterator[VideoFrame]:
    with _open_pyav(source, is_url) as container:
        stream = _video_stream(container, source)
        info = _stream_info(container, stream)
        _refuse_still_image(source, is_url, info)
        clock = _clock_for(source, info, sampling.assume_fps)
        select = _frame_selector(source, sampling, lambda: _count_pyav(source, is_url))
        stream.thread_type = "AUTO"
        yield from _deliver(source, is_url, _pyav_decoded(container, stream), info, select, clock)


def _open_pyav(source: str, is_url: bool):
    """The container of `source`, opened so that reading it opens nothing else on this machine (a playlist's
    entries, a referenced file, sockets: see demuxers.py); such a file raises `UnsafeVideoError`."""
    import av

    options = {"format_whitelist": demuxer_whitelist(playlists=is_url)}
    try:
        if is_url:
            return av.open(source, options=options, timeout=_URL_TIMEOUT)
        return av.open(source, options=options, io_open=only_this_file(source))
    except ReferenceRefused as error:
        raise UnsafeVideoError(f"cannot open video {source}: {error}") from error
    except av.error.HTTPNotFoundError as error:
        raise FileNotFoundError(f"video not found: {source} ({error})") from error
    except (av.error.FFmpegError, OSError) as error:
        kind = None if is_url else refused_kind(source)
        if kind is not None:
            raise UnsafeVideoError(
                f"cannot open video {source}: it is {kind}, which makes the decoder open the files or addresses it "
                "names; these are not opened: give the video itself"
            ) from error
        raise ValueError(f"cannot open video {source}: {_why_unopenable(source, is_url) or error}") from error


def _why_unopenable(source: str, is_url: bool) -> str | None:
    """A plain explanation for a local file FFmpeg cannot open, when there is one."""
    if not is_url and _mp4_index_missing(source):
        return (
            "it is an MP4 without its index (moov box), which is written last: the file was cut short (an "
            "interrupted copy or download, a recording that was not finished) and its frames cannot be located"
        )
    return None


def _mp4_index_missing(path: str) -> bool:
    """Whether `path` is an MP4/QuickTime file (first box `ftyp`) whose top-level boxes hold no `moov`."""
    size, position, kinds = os.path.getsize(path), 0, []
    with open(path, "rb") as handle:
        while position + 8 <= size:
            handle.seek(position)
            header = handle.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1:  # a 64-bit size follows the type
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                length = size - position
            if length < 8:
                return False  # not a box structure
            kinds.append(kind)
            position += length
    return kinds[:1] == [b"ftyp"] and b"moov" not in kinds


def _video_stream(container, source: str):
    if not container.streams.video:
        raise ValueError(f"{source} has no video stream")
    return container.streams.video[0]


def _stream_info(container, stream) -> _StreamInfo:
    flags = int(container.format.flags)
    raw, discontinuous = bool(flags & _AVFMT_NOTIMESTAMPS), bool(flags & _AVFMT_TS_DISCONT)
    rate = None if raw else _positive(stream.average_rate)  # a raw demuxer's rate is its default, 25
    return _StreamInfo(
        format_name=container.format.name,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        start=_seconds(stream.start_time, stream.time_base) or 0.0,
        # estimated from timestamps or bitrate for these formats, not declared
        declared_end=None if raw or discontinuous else _declared_end(container, stream),
        frame_interval=1.0 / rate if rate else None,
        bitstream_fps=_positive(stream.codec_context.framerate),
        raw=raw,
        discontinuous=discontinuous,
    )


def _declared_end(container, stream) -> float | None:
    """Where the container declares the video stream ends (seconds of stream time): the stream's duration (MP4,
    AVI...), Matroska's per-track DURATION tag (an end time, as FFmpeg writes it), else the container's duration
    when the video is its only stream (an audio track may outlast the video)."""
    start = _seconds(stream.start_time, stream.time_base) or 0.0
    if stream.duration:
        return start + float(stream.duration * stream.time_base)
    tagged = _parse_clock(stream.metadata.get("DURATION"))
    if tagged is not None:
        return tagged
    if container.duration and len(container.streams) == 1:
        return ((container.start_time or 0) + container.duration) / 1e6  # AV_TIME_BASE: microseconds
    return None


def _parse_clock(text: str | None) -> float | None:
    """Seconds in a `HH:MM:SS.fraction` text, or None."""
    try:
        hours, minutes, seconds = str(text).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _seconds(value: int | None, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _positive(rate) -> float | None:
    """`rate` as a float when it is a positive, finite number (PyAV reports unknown rates as None or 0)."""
    try:
        value = float(rate)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def _pyav_decoded(container, stream) -> Iterator[_Decoded]:
    """Every frame of `stream`; a decoder error, or a last packet cut short, ends it with `_DecodeError` after
    the frames the decoder still held."""
    import av

    packets = _WholePackets(container.demux(stream))
    try:
        for packet in packets:
            for frame in stream.decode(packet):
                yield _pyav_item(frame, stream.time_base)
    except av.error.FFmpegError as error:
        yield from _pyav_flush(stream)
        raise _DecodeError(f"decoding failed: {error}") from error
    if packets.cut_short is not None:
        raise _DecodeError(f"its last packet is cut short ({packets.cut_short.size} bytes left)")


class _WholePackets:
    """A stream's packets then `None` (flush the decoder), holding back one the demuxer flags corrupt until
    another follows: a corrupt last packet is what a truncation leaves (MP4 samples running past the end of
    the file), and sending it to a frame-threaded decoder silently loses the frames the decoder still holds."""

    def __init__(self, packets: Iterator):
        self.packets = packets
        self.cut_short = None  # the corrupt last packet held back, if any

    def __iter__(self) -> Iterator:
        held = None
        for packet in self.packets:
            if packet.size == 0:  # the demuxer's flush packet, or an empty (dropped-frame) one: no data
                continue
            if held is not None:
                yield held  # damaged mid-file: the decoder conceals what it can
                held = None
            if getattr(packet, "is_corrupt", False):
                held = packet
            else:
                yield packet
        self.cut_short = held
        yield None


def _pyav_flush(stream) -> Iterator[_Decoded]:
    """The frames a decoder still holds (B-frames waiting for a later reference) after an error."""
    import av

    try:
        frames = stream.decode(None)
    except av.error.FFmpegError:
        return
    for frame in frames:
        yield _pyav_item(frame, stream.time_base)


def _pyav_item(frame, time_base) -> _Decoded:
    duration = getattr(frame, "duration", None) or None  # AVFrame.duration: PyAV >= 13
    return _Decoded(
        time=_seconds(frame.pts, time_base),
        duration=_seconds(duration, time_base),
        image=functools.partial(frame.to_ndarray, format="rgb24"),
        height=frame.height,
        width=frame.width,
    )


def _count_pyav(source: str, is_url: bool) -> int:
    """Frames in the first video stream: the container's count when it records one, else the packets."""
    import av

    with _open_pyav(source, is_url) as container:
        stream = _video_stream(container, source)
        if stream.frames > 0:
            return stream.frames
        try:
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot read video {source}: {error}") from error


# -- decord -----------------------------------------------------------------------------------------------------------


def _iter_decord(path: str, sampling: _Sampling) -> Iterator[VideoFrame]:
    """decord's frames, or PyAV's for a file decord would misread."""
    info = _probe(path)
    _refuse_still_image(path, False, info)
    reason, level = _decord_misreads(info), logging.INFO
    if reason is None:
        try:
            reader, first = _open_decord(path, info)
        except _DecordUnusable as error:
            reason, level = str(error), logging.WARNING
    if reason is not None:
        yield from _pyav_instead(path, sampling, reason, level)
        return
    select = _frame_selector(path, sampling, lambda: len(reader))
    yield from _deliver(path, False, _decord_decoded(reader, first, info), info, select, _Clock())


def _probe(path: str) -> _StreamInfo | None:
    """The video stream's declarations, read by PyAV without decoding; None without PyAV or when it cannot
    open the file (decord may)."""
    if "pyav" not in available_backends():
        return None
    try:
        with _open_pyav(path, False) as container:
            return _stream_info(container, _video_stream(container, path))
    except UnsafeVideoError:
        raise  # decord would follow the references: it must not get the file either
    except ValueError:
        return None


def _decord_misreads(info: _StreamInfo | None) -> str | None:
    """Why decord would misread a file of this kind, or None."""
    if info is None:
        return None
    if info.raw:
        return f"decord cannot read raw {info.format_name} streams"
    if info.discontinuous:
        return f"decord sorts {info.format_name} timestamps (concatenated recordings would interleave)"
    return None


def _open_decord(path: str, info: _StreamInfo | None):
    """`(reader, first frame)`; `_DecordUnusable` when decord cannot open the file or decode its first frame
    right (it mangles frames under ~20 px wide)."""
    import decord

    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
        if len(reader) == 0:
            raise _DecordUnusable("decord finds no frame in it")
        first = reader[0].asnumpy()
    except (decord.DECORDError, RuntimeError) as error:
        raise _DecordUnusable(f"decord cannot read it: {error}") from error
    height, width = (info.height, info.width) if info else (tuple(first.shape) + (0, 0))[:2]
    problem = _image_problem(first, height, width)
    if problem is not None:
        raise _DecordUnusable(f"decord decodes frame 0 as {problem}")
    return reader, first


def _pyav_instead(path: str, sampling: _Sampling, reason: str, level: int) -> Iterator[VideoFrame]:
    if "pyav" not in available_backends():
        raise ValueError(f"cannot read video {path}: {reason}; PyAV, which may read it, is not installed")
    logger.log(level, "decoding %s with PyAV: %s", path, reason)
    yield from _iter_pyav(path, False, sampling)


def _decord_decoded(reader, first: np.ndarray, info: _StreamInfo | None) -> Iterator[_Decoded]:
    """decord's frames in order, each decoded when kept (decord seeks); frame 0 is already decoded."""
    times = reader.get_frame_timestamp(range(len(reader)))
    start = info.start if info else 0.0  # decord's times count from the stream's start
    height, width = first.shape[:2]
    for index, (begin, end) in enumerate(times.tolist()):
        image = (lambda: first) if index == 0 else functools.partial(_decord_image, reader, index)
        yield _Decoded(start + begin, end - begin, image, height, width)


def _decord_image(reader, index: int) -> np.ndarray:
    import decord

    try:
        return reader[index].asnumpy()
    except (decord.DECORDError, RuntimeError) as error:
        raise _DecodeError(f"decoding frame {index} failed: {error}") from error
