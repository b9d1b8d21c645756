"""Where a benchmark's video is: a file, or a folder of frames, found from the name the annotation gives.

`find_video(name, videos_dir)` tries, in order: `name` as a path (absolute, or relative to `videos_dir`), then
`videos_dir/name` with each video extension, then `videos_dir/name` as a folder of frames. A name that is none
of these is reported as missing, with the places tried.
"""

from __future__ import annotations

from pathlib import Path

from ..streaming.sources import FileSource, FrameSource
from .frame_folder import FrameFolderSource

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")


class VideoNotFoundError(FileNotFoundError):
    """No file or frame folder for a benchmark video."""


def find_video(name: str, videos_dir: str | Path | None) -> Path:
    """The file or frame folder of the video `name`; raises `VideoNotFoundError`."""
    base = Path(videos_dir) if videos_dir is not None else Path.cwd()
    given = Path(name)
    candidates = [given] if given.is_absolute() else [base / given]
    candidates += [base / f"{name}{extension}" for extension in VIDEO_EXTENSIONS]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = "/".join(VIDEO_EXTENSIONS)
    raise VideoNotFoundError(f"video {name!r} not found: no file or frame folder {candidates[0]}, nor with {tried}")


def open_video(path: Path, fps: float, frame_rate: float, backend: str | None = None) -> FrameSource:
    """A stream of `path`, sampled at `fps`: a frame folder (frames at `frame_rate` per second) or a video file."""
    if path.is_dir():
        return FrameFolderSource(path, fps=fps, frame_rate=frame_rate)
    return FileSource(path, fps=fps, backend=backend)
