"""A synthetic video (a white square moving over a changing background), drawn or encoded on the spot."""

from __future__ import annotations

import fractions
import os

import numpy as np


def synthetic_frame(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame `index` of the synthetic video: a white square moving right over a background whose red level is
    `(index * 16) % 256`. `[height, width, 3]` uint8."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (index * 16) % 256
    frame[..., 2] = 80
    side = max(4, height // 4)
    left = (index * 4) % max(1, width - side)
    frame[height // 2 - side // 2 : height // 2 + side // 2, left : left + side] = 255
    return frame


def write_synthetic_video(
    path: str | os.PathLike,
    num_frames: int = 30,
    fps: float = 10.0,
    width: int = 64,
    height: int = 48,
    timestamps: list[float] | None = None,
    codec: str = "mpeg4",
) -> str:
    """Encode `synthetic_frame(0..num_frames-1)` with PyAV at `fps`, or at the given `timestamps` (seconds) to
    make a variable-frame-rate file. Returns the path."""
    import av

    times = timestamps if timestamps is not None else [i / fps for i in range(num_frames)]
    path = os.fspath(path)
    time_base = fractions.Fraction(1, 1000)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=1000)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        for index, time in enumerate(times):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(index, width, height), format="rgb24")
            frame.pts, frame.time_base = round(time * 1000), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
