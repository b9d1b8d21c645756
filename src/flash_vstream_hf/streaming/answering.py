"""The question handler: a question and a memory snapshot in, an answer with its timings out.

A question reads one immutable `StreamSnapshot`, so it sees a consistent memory however many frames the ingest
thread adds meanwhile. `generate()` builds its own text KV cache every call, so questions never mix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from transformers.generation.streamers import BaseStreamer, TextIteratorStreamer

from ..modeling import FlashVStreamMemory


class NoFramesError(RuntimeError):
    """Raised by a question asked before the memory holds any frame (the original waited 30 s, then crashed)."""


@dataclass(frozen=True)
class StreamSnapshot:
    """A frozen view of a session's memory and the stream time of its newest frame."""

    memory: FlashVStreamMemory  # frozen: later updates of the session's memory do not change it
    stream_time: float | None  # seconds (timestamp of the newest frame of the current source); None before any
    # from snapshot_at(t): the stream ended before t, so this holds the whole stream and is earlier than t
    stream_ended: bool = False

    @property
    def frames(self) -> int:
        """Frames the memory has seen (including those of a resumed memory)."""
        return self.memory.frames_seen


@dataclass(frozen=True)
class Answer:
    """An answer and what it was computed from.

    `stream_time` and `frames` describe the snapshot the question read; `time_to_first_token` and `latency`
    are wall-clock seconds from the call to the first generated token and to the full answer.
    """

    question: str
    text: str
    stream_time: float | None
    frames: int
    memory_tokens: int
    new_tokens: int
    time_to_first_token: float | None
    latency: float
    snapshot: StreamSnapshot = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "answer": self.text,
            "stream_time": self.stream_time,
            "frames": self.frames,
            "memory_tokens": self.memory_tokens,
            "new_tokens": self.new_tokens,
            "time_to_first_token_s": self.time_to_first_token,
            "latency_s": self.latency,
        }


def question_text(question: str | list[dict]) -> str:
    """The last user text of a question given as a string or as a conversation."""
    if isinstance(question, str):
        return question
    for message in reversed(question):
        content = message.get("content")
        if message.get("role") == "user":
            if isinstance(content, str):
                return content
            return " ".join(item.get("text", "") for item in content if item.get("type") == "text")
    return ""


def build_inputs(processor, question: str | list[dict], num_video_tokens: int, device: torch.device):
    """Tokenised prompt for one question about a memory of `num_video_tokens` tokens.

    A string becomes a one-turn vicuna_v1 conversation with the video first; a conversation (a list of
    chat messages) is used as given and must hold one `{"type": "video"}` item.
    """
    if isinstance(question, str):
        if not question.strip():
            raise ValueError("question is empty")
        question = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    elif not isinstance(question, list):
        raise TypeError(f"question must be a string or a list of chat messages, got {type(question).__name__}")
    prompt = processor.apply_chat_template(question, add_generation_prompt=True)
    if processor.video_token not in prompt:
        raise ValueError('the conversation has no {"type": "video"} item to put the memory in')
    return processor(text=prompt, num_video_tokens=num_video_tokens, return_tensors="pt").to(device)


class FirstTokenClock(BaseStreamer):
    """Records when generation produced its first token (the first `put` after the prompt)."""

    def __init__(self):
        self.first_token_time: float | None = None
        self._prompt_seen = False

    def put(self, value) -> None:
        if self._prompt_seen and self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        self._prompt_seen = True

    def end(self) -> None:
        pass


class TimedTextStreamer(TextIteratorStreamer):
    """`TextIteratorStreamer` that also records when the first token arrived."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, **kwargs)
        self.first_token_time: float | None = None

    def put(self, value) -> None:
        if not self.next_tokens_are_prompt and self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        super().put(value)


def generate_answer(
    model,
    processor,
    question: str | list[dict],
    snapshot: StreamSnapshot,
    generate_kwargs: dict,
    started: float,
    streamer: BaseStreamer | None = None,
) -> Answer:
    """Answer `question` from `snapshot` with `model.generate(**generate_kwargs)`; `started` is the
    `time.perf_counter()` of the call, for the latencies."""
    if snapshot.frames == 0:
        raise NoFramesError(
            "no frame has reached the memory yet: wait for the stream (session.wait_for_frames()) and ask again"
        )
    if "streamer" in generate_kwargs:
        raise ValueError("pass no streamer: use ask_stream() to receive the answer as it is generated")
    tokens = snapshot.memory.get_seq_length()
    inputs = build_inputs(processor, question, tokens, model.device)
    if streamer is None and generate_kwargs.get("num_beams", 1) == 1:  # streamers do not support beam search
        streamer = FirstTokenClock()
    # generate() may reorder or repeat the memory it gets (beams, num_return_sequences): give it its own object.
    output = model.generate(**inputs, video_memory=snapshot.memory.snapshot(), streamer=streamer, **generate_kwargs)
    new_ids = output[0, inputs["input_ids"].shape[1] :]
    first = getattr(streamer, "first_token_time", None)
    return Answer(
        question=question_text(question),
        text=processor.decode(new_ids, skip_special_tokens=True).strip(),
        stream_time=snapshot.stream_time,
        frames=snapshot.frames,
        memory_tokens=tokens,
        new_tokens=int(new_ids.numel()),
        time_to_first_token=None if first is None else first - started,
        latency=time.perf_counter() - started,
        snapshot=snapshot,
    )


class AnswerStream:
    """The text of an answer as it is generated: iterate over it for text pieces; `answer` holds the full
    `Answer` once the iteration has ended. Generation runs in a background thread."""

    def __init__(self, generate: Callable[[TimedTextStreamer], Answer], streamer: TimedTextStreamer):
        self._streamer = streamer
        self._answer: Answer | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(generate,), name="flash-vstream-answer", daemon=True)
        self._thread.start()

    def _run(self, generate: Callable[[TimedTextStreamer], Answer]) -> None:
        try:
            self._answer = generate(self._streamer)
        except BaseException as error:  # handed to the iterating thread
            self._error = error
            self._streamer.end()  # wake the iterator; generate() does not call end() when it fails

    def __iter__(self) -> Iterator[str]:
        for text in self._streamer:
            if text:
                yield text
        self._thread.join()
        if self._error is not None:
            raise self._error

    @property
    def answer(self) -> Answer:
        if self._thread.is_alive() or (self._answer is None and self._error is None):
            raise RuntimeError("the answer is not complete yet: iterate over the stream first")
        if self._error is not None:
            raise RuntimeError("the question failed") from self._error
        return self._answer

    def text(self) -> str:
        """Wait for the whole answer and return its text."""
        for _ in self:
            pass
        return self.answer.text
