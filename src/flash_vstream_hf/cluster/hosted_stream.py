"""One stream on a host: its `StreamingSession`, its checkpointer and, for push-mode streams, its frame queue."""

from __future__ import annotations

import time

from ..streaming import StreamingSession
from ..streaming.sources import FrameSource
from .checkpoints import Checkpoint, StreamCheckpointer
from .streams import PushedFrames, ShiftedSource, StreamSpec


class HostedStream:
    """A session opened on `source` (already checked and shifted for a resume), checkpointed every K frames."""

    def __init__(
        self,
        spec: StreamSpec,
        session_factory,
        source: FrameSource,
        checkpointer: StreamCheckpointer,
        pushed: PushedFrames | None,
        memory,
        resumed_from: Checkpoint | None,
    ):
        self.spec, self.checkpointer, self.pushed = spec, checkpointer, pushed
        self.resumed_from = resumed_from
        self.opened_at = time.time()
        self.session: StreamingSession = session_factory(memory, checkpointer.on_frame)
        self.session.start(source)
        self.session_done_flushed = False

    @staticmethod
    def resumed_source(spec: StreamSpec, source: FrameSource, checkpoint: Checkpoint | None, gap: float):
        """A file resumes after the checkpoint's stream time; a live source continues the stream's clock from
        it, `gap` seconds later (the time nobody was reading it)."""
        if checkpoint is None or checkpoint.stream_time is None or spec.kind == "push":
            return source  # pushed frames carry the client's own timestamps
        if spec.replayable:
            return ShiftedSource(source, skip_until=checkpoint.stream_time)
        return ShiftedSource(source, offset=checkpoint.stream_time + max(gap, 0.0) + 1.0 / (spec.fps or 1.0))

    def flush_if_ended(self) -> None:
        """Once the source has ended, its last frames are checkpointed (a finished file must not be re-read)."""
        if not self.session.running and not self.session_done_flushed:
            self.checkpointer.flush(self.session.snapshot())
            self.session_done_flushed = True

    def close(self) -> None:
        if self.pushed is not None:
            self.pushed.close()
        self.session.stop(timeout=30)
        self.checkpointer.flush(self.session.snapshot())
        self.checkpointer.close()
