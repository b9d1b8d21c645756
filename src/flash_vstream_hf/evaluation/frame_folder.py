"""A folder of frames as a stream: images sorted by name, frame `k` at `k / frame_rate` seconds (1 fps, as the
VStream-QA frame archives are sampled).

Names sort naturally (`frame_2` before `frame_10`), which for zero-padded names is plain name order. `open()`
lists the folder and decodes the first image, so a missing, empty or unreadable folder fails there, like a bad
video file. An image further on that cannot be decoded becomes a frame the session counts as bad and skips
(`status().frames_failed`): one damaged JPEG does not end a long stream.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from transformers.utils import logging

from ..processing.video_io import TimestampSampler, VideoFrame
from ..streaming.sources import FrameSource

logger = logging.get_logger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key comparing runs of digits as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of `folder` in frame order; raises `FileNotFoundError`, `NotADirectoryError`, `OSError`
    (cannot be listed) or `ValueError` (no image in it), each naming the folder."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"frame folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of frames")
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.lower().endswith(IMAGE_EXTENSIONS)]
    except OSError as error:
        raise OSError(f"cannot list frame folder {folder}: {error.strerror or error}") from error
    if not names:
        raise ValueError(f"frame folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [folder / name for name in sorted(names, key=natural_key)]


def read_image(path: Path) -> np.ndarray:
    """`[H, W, 3]` uint8 RGB; raises `ValueError` naming the file when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"cannot decode frame {path}: {error}") from error


class FrameFolderSource(FrameSource):
    """Frames of a folder, sampled at `fps` from their native `frame_rate` (frames per second of the folder)."""

    def __init__(
        self, folder: str | os.PathLike, fps: float | None = 1.0, frame_rate: float = 1.0, speed: float | None = None
    ):
        super().__init__(fps, speed)
        if not frame_rate > 0:
            raise ValueError(f"frame_rate must be positive, got {frame_rate}")
        self.folder = Path(folder)
        self.frame_rate = frame_rate
        self._paths: list[Path] = []
        self._first: np.ndarray | None = None

    def describe(self) -> str:
        return str(self.folder)

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the last (known once opened)."""
        return max(0, len(self._paths) - 1) / self.frame_rate

    def _open(self) -> None:
        self._paths = frame_files(self.folder)
        try:
            self._first = read_image(self._paths[0])
        except ValueError as error:
            raise ValueError(f"unreadable frame folder: {error}") from error

    def _frames(self, stop: threading.Event) -> Iterator[VideoFrame]:
        sampler = TimestampSampler(self.fps)
        for index, path in enumerate(self._paths):
            if stop.is_set():
                return
            timestamp = index / self.frame_rate
            if not sampler.accept(timestamp):
                continue  # decode only the frames kept
            if index == 0:
                image, self._first = self._first, None
            else:
                try:
                    image = read_image(path)
                except ValueError as error:
                    logger.warning("%s; the frame is skipped", error)
                    image = None  # the session counts it as a bad frame and goes on
            yield VideoFrame(timestamp, image)
