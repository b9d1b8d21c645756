"""`StreamStatus`: the counters of a `StreamingSession` at one moment, and their one line for a status bar."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamStatus:
    """Counters of a session. Once a stream has ended, `frames_in = frames_ingested + frames_dropped +
    frames_failed`."""

    state: str  # "idle", "starting", "running", "stopping", "finished", "stopped" or "failed"
    source: str | None
    stream_time: float | None  # timestamp of the newest frame in memory (current source)
    frames_in: int  # sampled frames read from the sources
    frames_ingested: int
    frames_dropped: int  # skipped by the "drop" backlog policy (or discarded by stop())
    frames_failed: int  # bad frames (bad image or timestamp), logged and skipped
    bad_timestamps: int  # of frames_failed: no finite timestamp, or earlier than the previous frame's
    timestamp_resets: int  # backward jumps of a source's timestamps, each re-based as a new segment
    backlog: int  # frames waiting for the ingest thread
    backlog_bytes: int  # their image bytes: at most max_backlog * 3 * MAX_ASPECT_RATIO * max_frame_side**2
    # frames per second the ingest thread gets through while busy (preprocessing + vision + memory, recent
    # batches): its capacity. Above the source's sampled fps, ingest keeps up with a live stream.
    ingest_fps: float | None
    memory_frames: int  # frames the memory has seen, a resumed memory's included
    memory_tokens: int
    memory_bytes: int
    questions_answered: int
    questions_failed: int
    error: str | None  # why the last source ended early, if it did
    failed_at: float | None  # the stream time it had reached then (its last frame read); None if none was

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
        if self.timestamp_resets:
            parts.append(f"segments={self.timestamp_resets + 1}")
        if self.error:
            where = "" if self.failed_at is None else f" at {_clock(self.failed_at)}"
            parts.append(f"error{where}: {self.error}")
        return " | ".join(parts)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:d}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes:02d}:{secs:04.1f}"


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


__all__ = ["StreamStatus"]
