"""One memory file per video, without Ray: the file names, building one memory, and what makes an output folder
resumable. The Ray job (`index.py`) runs `build_memory_file` in each actor.

A memory is built by the single-process streaming path, `StreamingSession` (no second copy of ingest): the video
is played as fast as it can be ingested into a fresh memory seeded with `seed`, one frame per vision-tower call
(as `flash-vstream eval` does: a differently batched vision tower differs in the last bits, so a memory must not
depend on how fast the machine was), and saved with the memory's `save` (a temporary file beside the
target, synced, then `os.replace`d over it: an existing file is always complete). The same video, fps and seed
give the same tensors in any process.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ...evaluation.run_settings import check_recorded_settings

MEMORY_SUFFIX = ".safetensors"
SETTINGS_FILE = "index-run.json"
ERRORS_FILE = "index-errors.json"
SETTINGS_KEYS = ("model", "dtype", "load_in_4bit", "fps", "frame_rate", "backend", "memory_seed")


class VideoFailedError(RuntimeError):
    """The video could not be opened, or failed before its end: no memory file is written."""


def memory_names(videos: list[str]) -> dict[str, str]:
    """`{video: memory file name}`, each named after its video (`clips/a.mp4` -> `a.safetensors`). The same path
    given twice is one video; two videos that would write the same file (`x/a.mp4` and `y/a.mp4`, or `a.mp4` and
    `a.mkv`; compared without case, as some file systems do) raise a `ValueError` naming both."""
    names: dict[str, str] = {}
    owners: dict[str, str] = {}  # case-folded name -> the video that has it
    seen: set[str] = set()
    for video in videos:
        resolved = os.path.realpath(video)
        if resolved in seen:
            continue
        seen.add(resolved)
        name = Path(video).stem + MEMORY_SUFFIX
        other = owners.setdefault(name.casefold(), video)
        if other != video:
            raise ValueError(
                f"videos {other} and {video} would both write the memory file {name}: index them into different "
                "--out folders, or rename one"
            )
        names[video] = name
    return names


@dataclass
class BuildResult:
    """What building one video's memory did: `status` is "done" or "failed" (with `error`); `frames` in the
    memory, `frames_failed` unreadable frames skipped, `seconds` spent."""

    video: str
    output: str
    status: str
    frames: int = 0
    frames_failed: int = 0
    seconds: float = 0.0
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def build_memory(
    model,
    processor,
    video: str | os.PathLike,
    *,
    fps: float,
    seed: int | None = None,
    frame_rate: float = 1.0,
    backend: str | None = None,
):
    """The memory of the whole `video` (a file or a folder of frames) and the session's final status; raises
    `VideoFailedError` when it cannot be opened or fails before its end."""  # fmt: skip
    from ...evaluation.videos import open_video
    from ...streaming import StreamingSession

    try:
        source = open_video(Path(video), fps, frame_rate, backend)
        session = StreamingSession(model, processor, memory=model.new_memory(1, seed=seed), backlog="block",
                                   max_batch=1)  # fmt: skip
        session.start(source, speed=None)
    except Exception as error:  # missing, corrupt, no video stream, no frames
        raise VideoFailedError(f"cannot open {video}: {type(error).__name__}: {error}") from error
    with session:
        session.wait()
        status = session.status()
    if status.error:
        raise VideoFailedError(f"{video} failed at {status.failed_at} s: {status.error}")
    if status.memory_frames == 0:
        raise VideoFailedError(f"{video} has no frame")
    return session.snapshot().memory, status


def build_memory_file(model, processor, video: str, output: str | os.PathLike, **options) -> BuildResult:
    """Build `video`'s memory (`build_memory`, same options) and save it to `output`; never raises for a bad
    video: the result says what went wrong."""
    began = time.perf_counter()
    try:
        memory, status = build_memory(model, processor, video, **options)
        memory.save(output)
    except Exception as error:  # noqa: BLE001 (a bad video must not end the job: its result says why)
        message = str(error) if isinstance(error, VideoFailedError) else f"{type(error).__name__}: {error}"
        return BuildResult(str(video), str(output), "failed", seconds=time.perf_counter() - began, error=message)
    return BuildResult(str(video), str(output), "done", memory.frames_seen, status.frames_failed,
                       time.perf_counter() - began)  # fmt: skip


def complete_memory_file(path: str | os.PathLike) -> int | None:
    """The frame count of the memory file at `path` when it is there and loads (every check of its family's
    `load`, v1 or v2), else None."""
    from ...families import load_memory

    if not os.path.isfile(path):
        return None
    try:
        return load_memory(path).frames_seen
    except (ValueError, OSError):
        return None


def check_settings(folder: Path, settings: dict) -> str | None:
    """Record `settings` in `folder/index-run.json`, or name those that differ from the ones recorded there (the
    memories in it were built with those: mixing would make a folder of incomparable memories)."""
    return check_recorded_settings(folder / SETTINGS_FILE, settings, SETTINGS_KEYS)


def write_errors(folder: Path, failed: list[BuildResult]) -> Path | None:
    """`folder/index-errors.json`: the videos that failed in this run, with why (removed when none did)."""
    path = folder / ERRORS_FILE
    if not failed:
        path.unlink(missing_ok=True)
        return None
    rows = [{"video": result.video, "error": result.error} for result in failed]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
