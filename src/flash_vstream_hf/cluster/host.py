"""`StreamHost`: one loaded model and the streams it owns (a Ray actor in the cluster; a plain class here).

A host shares its model between up to `streams_per_host` `StreamingSession`s, as `flash-vstream serve` does in
one process, answers the questions about its streams that arrive together in one batched `generate`
(`streaming.batched_answers.AnswerBatcher`: the same greedy answers as one at a time), checkpoints each stream every
K frames, and opens a stream either fresh or from its checkpoint
(`resume=True`): the registry does the latter on another host when this one dies. A host that Ray restarts comes
back empty, with a new `incarnation`, and the registry reopens its streams.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid

from ..families import memory_class
from ..streaming import StreamingSession
from ..streaming.answering import NoFramesError
from ..streaming.batched_answers import AnswerBatcher
from .checkpoints import StreamCheckpointer, memory_from_bytes, memory_to_bytes, read_checkpoint
from .errors import ApiError, unknown_stream
from .frames import check_timestamps, decode_frame
from .hosted_stream import HostedStream
from .models import load_served_model
from .settings import ClusterSettings
from .store import CheckpointStore
from .streams import PushedFrames, StreamSpec, open_stream_source

AT_TIMEOUT = 60.0  # seconds a question asked for a later stream time waits for the stream to get there
ANSWER_TIMEOUT = 300.0  # seconds a question may wait for its batch and its answer
BATCH_WINDOW = 0.02  # seconds the batcher waits after a question for others to join it


class StreamHost:
    def __init__(self, name: str, settings: ClusterSettings):
        self.name, self.settings = name, settings
        self.incarnation = uuid.uuid4().hex
        self.served = load_served_model(settings.model, settings.load_in_4bit)
        self.store = CheckpointStore(settings.store)
        self.url_policy = settings.url_policy()
        self._streams: dict[str, HostedStream] = {}
        self._last_pushed: dict[str, float] = {}
        self._lock = threading.Lock()
        generation = {"max_new_tokens": settings.max_new_tokens}
        self.batcher = AnswerBatcher(
            self.served.model, self.served.processor, window_s=BATCH_WINDOW,
            max_batch_size=settings.streams_per_host, generation_kwargs=generation,
        )  # fmt: skip
        self.questions: dict[str, int] = {}  # stream id -> questions answered

    # -- what the registry asks -----------------------------------------------------------------------------------

    def ping(self) -> dict:
        """Who this is, and the streams it owns with their frame counts (the registry's health check)."""
        with self._lock:
            streams = dict(self._streams)
        for stream in streams.values():
            stream.flush_if_ended()
        return {
            "name": self.name,
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "node_id": _node_id(),
            "streams": {sid: {"frames": s.session.snapshot().frames} for sid, s in streams.items()},
        }

    def open_stream(self, spec: dict, resume: bool = False, gap: float = 0.0) -> dict:
        """Open the stream `spec` describes, from its checkpoint when `resume` (gap: seconds it was down)."""
        spec = StreamSpec.from_dict(spec)
        with self._lock:
            if spec.stream_id in self._streams:
                raise ApiError(409, "stream_id", f"stream {spec.stream_id!r} is already open on {self.name}")
            if len(self._streams) >= self.settings.streams_per_host:
                raise ApiError(503, None, f"{self.name} owns {len(self._streams)} streams, its most", 5.0)
            self._streams[spec.stream_id] = None  # reserved while it opens
        try:
            stream = self._open(spec, resume, gap)
        except BaseException:
            with self._lock:
                del self._streams[spec.stream_id]
            raise
        with self._lock:
            self._streams[spec.stream_id] = stream
        return self.status(spec.stream_id)

    def _open(self, spec: StreamSpec, resume: bool, gap: float) -> HostedStream:
        model, processor = self.served.model, self.served.processor
        checkpoint = read_checkpoint(self.store, spec.stream_id) if resume else None
        if checkpoint is not None:
            data = self.store.read_bytes(checkpoint.memory_key)
            memory = memory_from_bytes(data, memory_class(model))
        else:
            memory = model.new_memory(1, seed=spec.memory_seed)
        pushed = PushedFrames(self.settings.push_queue) if spec.kind == "push" else None
        try:
            source = open_stream_source(spec, self.settings.media_root, self.url_policy, pushed)
            source = HostedStream.resumed_source(spec, source, checkpoint, gap)
        except PermissionError as error:
            raise ApiError(403, "source", str(error)) from error
        except (ValueError, FileNotFoundError) as error:  # url_guard.UrlRefused is a ValueError
            raise ApiError(400, "source", str(error)) from error
        checkpointer = StreamCheckpointer(self.store, spec.stream_id, self.settings.checkpoint_every, checkpoint)

        def session(memory, on_frame):
            return StreamingSession(
                model, processor, memory,
                generation_kwargs={"max_new_tokens": self.settings.max_new_tokens, "do_sample": False},
                on_frame=on_frame,
            )  # fmt: skip

        try:
            stream = HostedStream(spec, session, source, checkpointer, pushed, memory, checkpoint)
        except (ValueError, OSError) as error:  # the source would not open: a corrupt file, a dead URL
            checkpointer.close()
            raise ApiError(400, "source", f"cannot open {spec.source!r}: {error}") from error
        if checkpoint is not None and checkpoint.stream_time is not None:
            self._last_pushed[spec.stream_id] = checkpoint.stream_time
        return stream

    def close_stream(self, stream_id: str, forget: bool = True) -> None:
        """Stop the stream; with `forget`, its checkpoints go too (the API's DELETE)."""
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is None:
            raise unknown_stream(stream_id)
        stream.close()
        if forget:
            self.store.delete(f"streams/{stream_id}")

    def close_all(self) -> None:
        """Stop every stream, checkpoints kept (the cluster is going down)."""
        for stream_id in list(self._streams):
            self.close_stream(stream_id, forget=False)
        self.batcher.close()

    # -- what the gateway asks ------------------------------------------------------------------------------------

    def status(self, stream_id: str) -> dict:
        stream = self._stream(stream_id)
        status = stream.session.status()
        last = stream.checkpointer.last
        return {
            "stream_id": stream_id,
            "kind": stream.spec.kind,
            "source": stream.spec.source,
            "state": status.state,
            "frames_seen": status.memory_frames,
            "stream_time": status.stream_time,
            "frames_dropped": status.frames_dropped,
            "frames_failed": status.frames_failed,
            "backlog": status.backlog,
            "ingest_fps": status.ingest_fps,
            "memory_tokens": status.memory_tokens,
            "memory_bytes": status.memory_bytes,
            "questions_answered": status.questions_answered + self.questions.get(stream_id, 0),
            "error": status.error,
            "checkpoint": None if last is None else {"frames_seen": last.frames_seen, "stream_time": last.stream_time},
            "resumed_from_frames": None if stream.resumed_from is None else stream.resumed_from.frames_seen,
            "owner": {"host": self.name, "node_id": _node_id(), "pid": os.getpid()},
        }

    def ask(self, stream_id: str, question, max_new_tokens: int | None = None, at: float | None = None) -> dict:
        """The answer to `question` (text or chat messages) from the memory now, or as of stream time `at`;
        batched with the questions about this host's other streams that arrive meanwhile."""
        session = self._stream(stream_id).session
        snapshot = self._snapshot_at(session, at) or session.snapshot()
        kwargs = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
        try:
            answer = self.batcher.submit(question, snapshot, **kwargs).result(timeout=ANSWER_TIMEOUT)
        except NoFramesError as error:
            raise ApiError(409, "stream_id", str(error), retry_after=1.0) from error
        except ValueError as error:  # a conversation without a question, say
            raise ApiError(422, "question", str(error)) from error
        self.questions[stream_id] = self.questions.get(stream_id, 0) + 1
        return {**answer.to_dict(), "frames_seen": answer.frames, "stream_id": stream_id}

    def ask_stream(self, stream_id: str, question, max_new_tokens: int | None = None, at: float | None = None):
        """Like `ask`, yielding the text as it is generated, then the answer's dict (a Ray streaming call)."""
        session = self._stream(stream_id).session
        kwargs = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
        try:
            stream = session.ask_stream(question, snapshot=self._snapshot_at(session, at), **kwargs)
        except NoFramesError as error:
            raise ApiError(409, "stream_id", str(error), retry_after=1.0) from error
        for piece in stream:
            yield piece
        yield {**stream.answer.to_dict(), "frames_seen": stream.answer.frames, "stream_id": stream_id}

    def push_frames(self, stream_id: str, frames: list[tuple[float, bytes]]) -> dict:
        """Queue pushed `(timestamp, image bytes)` frames, all or none."""
        stream = self._stream(stream_id)
        if stream.pushed is None:
            raise ApiError(409, "stream_id", f"stream {stream_id!r} reads {stream.spec.kind} {stream.spec.source!r}, "
                           "it takes no pushed frames")  # fmt: skip
        check_timestamps([t for t, _ in frames], self._last_pushed.get(stream_id))
        images = [(t, decode_frame(data, f"frames[{i}].image")) for i, (t, data) in enumerate(frames)]
        try:
            stream.pushed.push(images)
        except queue.Full as error:
            raise ApiError(429, "frames", f"the stream's queue is full ({error}); push again later", 1.0) from error
        if images:
            self._last_pushed[stream_id] = images[-1][0]
        return {"accepted": len(images), "frames_seen": stream.session.snapshot().frames}

    def memory_file(self, stream_id: str) -> bytes:
        """The stream's memory now, as a memory file (safetensors)."""
        return memory_to_bytes(self._stream(stream_id).session.snapshot().memory)

    def _stream(self, stream_id: str) -> HostedStream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise unknown_stream(stream_id)
        return stream

    @staticmethod
    def _snapshot_at(session: StreamingSession, at: float | None):
        if at is None:
            return None
        try:
            return session.snapshot_at(at).result(timeout=AT_TIMEOUT)
        except ValueError as error:  # the stream is past `at`: the memory keeps no history
            raise ApiError(409, "at", str(error)) from error
        except TimeoutError as error:
            raise ApiError(504, "at", f"the stream did not reach {at} s within {AT_TIMEOUT:.0f} s") from error
        except RuntimeError as error:  # the stream ended, failed or was stopped before `at`
            raise ApiError(409, "at", str(error)) from error


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:
        return None
