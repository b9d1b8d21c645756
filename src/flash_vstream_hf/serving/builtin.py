"""Built-in generated streams: the frames the model ingests and a video file the browser plays alongside.

The model ingests the generated frames themselves (not the encoded video), so what it sees is exactly what the
stream is made of; the browser plays an upscaled WebM of the same frames, started at the same moment, so the
picture and the stream time in the answers agree. WebM/VP8 because every Chromium, Firefox and Safari build
plays it (H.264 is missing from some Linux builds of Chromium), and PyAV's wheels can encode it.

With the synthetic world (`flash_vstream_hf.synthetic`, the streams the demo model is trained on) the stream is
a `SyntheticStream`; without it, `tiny.synthetic_frame` (a white square moving over a changing background).
"""

from __future__ import annotations

import fractions
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_RATE = 1.0  # frames per second of stream time: the synthetic world draws one frame per second
PLAYBACK_SIDE = 256  # pixels of the browser's copy (the model sees its own input size)
DEFAULT_SECONDS = 300


@dataclass(frozen=True)
class BuiltinStream:
    """One built-in stream: `name` for the menu, `seed` of its generator, `seconds` long at 1 frame a second."""

    name: str
    seed: int
    seconds: int = DEFAULT_SECONDS


def synthetic_world_available() -> bool:
    """Whether the synthetic world (`flash_vstream_hf.synthetic.world`) can be imported."""
    try:
        from ..synthetic.world import SyntheticStream  # noqa: F401
    except ImportError:
        return False
    return True


def default_streams() -> list[BuiltinStream]:
    """The streams offered in the menu: held-out seeds of the synthetic world (training uses seeds >= 1e6)."""
    kind = "synthetic world" if synthetic_world_available() else "moving square"
    return [BuiltinStream(f"{kind} #{seed}", seed) for seed in (4242, 7, 2024)]


class FrameGenerator:
    """Frame `t` (an `[H, W, 3]` uint8 array) of a built-in stream at the model's input size."""

    def __init__(self, seed: int, size: int):
        self.size = size
        try:
            from ..synthetic.world import SyntheticStream
        except ImportError:
            self._world = None
        else:
            self._world = SyntheticStream(seed, size=size)
        self.seed = seed

    def __call__(self, t: int) -> np.ndarray:
        if self._world is not None:
            return self._world.frame(t)
        from ..tiny import synthetic_frame

        return synthetic_frame(t + self.seed, width=self.size * 4 // 3, height=self.size)


def frames(stream: BuiltinStream, size: int):
    """An iterator of `(timestamp, frame)` for `StreamingSession.start`: frame `t` at `t` seconds."""
    draw = FrameGenerator(stream.seed, size)
    for t in range(stream.seconds):
        yield t / FRAME_RATE, draw(t)


def write_playback_video(stream: BuiltinStream, size: int, path: str | os.PathLike) -> str:
    """Encode the frames of `stream` (drawn at `size`, upscaled without smoothing to about `PLAYBACK_SIDE`)
    as a WebM (VP8) at 1 frame per second; returns the path."""
    import av

    draw = FrameGenerator(stream.seed, size)
    scale = max(1, PLAYBACK_SIDE // size)
    first = _upscale(draw(0), scale)
    height, width = first.shape[:2]
    path = os.fspath(path)
    with av.open(path, "w", format="webm") as container:
        video = container.add_stream("libvpx", rate=fractions.Fraction(FRAME_RATE))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        # the fastest settings: the file is made while the user waits; one thread, the cores are for the model
        video.options = {"deadline": "realtime", "cpu-used": "16", "threads": "1", "b": "1M"}
        for t in range(stream.seconds):
            image = first if t == 0 else _upscale(draw(t), scale)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = t  # in 1 / FRAME_RATE units
            container.mux(video.encode(frame))
        container.mux(video.encode())
    return path


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling, even sides (yuv420p needs them)."""
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    return image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]


class PlaybackCache:
    """The browser's copy of each built-in stream, encoded once per process (every session plays the same
    file) into a folder of its own, removed with `close()`."""

    def __init__(self, size: int, folder: str | os.PathLike | None = None):
        self.size = size
        self._own = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="flash-vstream-streams-") if folder is None else folder)
        self._paths: dict[BuiltinStream, str] = {}
        self._lock = threading.Lock()

    def path(self, stream: BuiltinStream) -> str:
        with self._lock:  # two sessions picking the same stream at once encode it once
            if stream not in self._paths:
                name = f"stream-{stream.seed}-{stream.seconds}s-{self.size}px.webm"
                self._paths[stream] = write_playback_video(stream, self.size, self.folder / name)
            return self._paths[stream]

    def close(self) -> None:
        if self._own:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)
