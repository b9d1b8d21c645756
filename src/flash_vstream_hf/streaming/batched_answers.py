"""Questions about different streams answered together: one batched `model.generate` call for all of them.

Each row of the batch is one question about one `StreamSnapshot`: its prompt holds as many `<video>` placeholders
as its own memory gives tokens (streams that have seen few frames give fewer), the prompts are padded on the left,
and `generate` gets one memory per row (`video_memory=[m_0, m_1, ...]`), so the memories of different streams, at
different frame counts, never mix. Greedy rows give the token ids they give when asked one at a time.

```python
answers = answer_together(model, processor, [("What colour is it?", a.snapshot()), ("How many?", b.snapshot())])

with AnswerBatcher(model, processor, window_s=0.02, max_batch_size=8) as batcher:   # from many threads:
    future = batcher.submit("What colour is it?", session.snapshot(), max_new_tokens=32)
    answer = future.result()
```
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .answering import Answer, FirstTokenClock, NoFramesError, StreamSnapshot, build_inputs, question_text

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

# Built by `answer_together` for every row; a caller passing them would break the rows apart.
BUILT_INPUTS = (
    "input_ids", "attention_mask", "inputs_embeds", "position_ids", "past_key_values", "cache",
    "video_memory", "pixel_values_videos", "video_frame_mask", "streamer",
)  # fmt: skip
# Assisted decoding runs one sample at a time in transformers.
ONE_AT_A_TIME = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit", "assistant_tokenizer")


def check_batchable(generate_kwargs: dict) -> dict:
    """`generate_kwargs` made safe to batch: `do_sample=False` added where not given (greedy whatever the model's
    generation config says). Raises a `ValueError` naming the argument for kwargs that would make a row's answer
    differ from the one it gets alone: sampling (a batch draws its random numbers in another order than one row),
    `num_return_sequences != 1`, assisted decoding, or the inputs `answer_together` builds itself.

    Beam search (`num_beams > 1`) is allowed: transformers keeps the beams of each row apart, so rows give the
    answers they give alone (up to float rounding, like greedy rows).
    """
    kwargs = dict(generate_kwargs or {})
    for name in BUILT_INPUTS:
        if name in kwargs:
            raise ValueError(f"{name} cannot be passed: answer_together builds it for every row (got {name}=...)")
    for name in ONE_AT_A_TIME:
        if kwargs.get(name) is not None:
            raise ValueError(f"{name} (assisted decoding) cannot be batched; ask one question at a time")
    config = kwargs.get("generation_config")
    for name, default in (("do_sample", False), ("num_return_sequences", 1)):
        value = kwargs.get(name, getattr(config, name, default) if config is not None else default)
        if name == "do_sample" and value:
            raise ValueError(
                "do_sample=True cannot be batched: a batch draws its samples in another order than one question "
                "does, so answers would differ from asking one at a time; use greedy or beam search (num_beams)"
            )
        if name == "num_return_sequences" and value != 1:
            raise ValueError(f"num_return_sequences must be 1 (one answer per question), got {value!r}")
    if config is None:
        kwargs.setdefault("do_sample", False)
    return kwargs


def _token_ids(value, default) -> set[int]:
    value = default if value is None else value
    if value is None:
        return set()
    if isinstance(value, torch.Tensor):
        return set(value.flatten().tolist())
    return {int(value)} if isinstance(value, int) else {int(v) for v in value}


def _answer_ids(ids: list[int], eos: set[int], pad: int | None) -> list[int]:
    """A row's generated ids as generate() gives them for that row alone: up to and including its first end token
    (the batch goes on for longer rows and pads finished ones); without one, trailing padding removed."""
    for position, token in enumerate(ids):
        if token in eos:
            return ids[: position + 1]
    while ids and pad is not None and ids[-1] == pad:
        ids = ids[:-1]
    return ids


def answer_together(
    model,
    processor,
    requests: Sequence[tuple[str | list[dict], StreamSnapshot]],
    generate_kwargs: dict | None = None,
    started: Sequence[float] | None = None,
) -> list[Answer | Exception]:
    """Answer questions about different streams with one batched `model.generate` call.

    Args:
        requests: `(question, snapshot)` pairs; each question is a string or a chat (as `StreamingSession.ask`
            takes it) about its own snapshot, e.g. of several `StreamingSession`s.
        generate_kwargs: shared by all rows (e.g. `{"max_new_tokens": 64}`), checked by `check_batchable`; the
            decoding is greedy unless `num_beams` asks for beam search. Kwargs that cannot be batched raise a
            `ValueError` for the whole call.
        started: `time.perf_counter()` at which each request arrived (default: this call), for the latencies.

    Returns:
        One entry per request, in order: its `Answer`, or the exception that row failed with (returned, not
        raised), e.g. `NoFramesError` for a snapshot without frames or `ValueError` for a blank question; the
        other rows are answered all the same. If `generate` itself fails, it raises for the whole call.

    Every row's `time_to_first_token` is when the batch produced its first token (all rows get theirs in the same
    step, `None` with beam search) and its `latency` when the whole batch was done, both counted from its `started`.
    """
    call_started = time.perf_counter()
    kwargs = check_batchable(generate_kwargs or {})
    starts = [call_started] * len(requests) if started is None else list(started)
    if len(starts) != len(requests):
        raise ValueError(f"started must give one time per request: {len(requests)} requests, {len(starts)} times")
    results: list[Answer | Exception | None] = [None] * len(requests)
    rows: list[tuple[int, list[int], StreamSnapshot]] = []  # (request index, prompt ids, snapshot)
    for index, request in enumerate(requests):
        try:
            question, snapshot = request
            rows.append((index, _prompt_ids(model, processor, question, snapshot), snapshot))
        except Exception as error:  # noqa: BLE001  (whatever it is, it is this row's fault only)
            results[index] = error
    if not rows:
        return results

    config = kwargs.get("generation_config") or model.generation_config
    pad = kwargs.get("pad_token_id", config.pad_token_id)
    if pad is None:
        pad = processor.tokenizer.pad_token_id
    eos = _token_ids(kwargs.get("eos_token_id"), config.eos_token_id)
    if pad is None:
        pad = min(eos) if eos else 0
    if "pad_token_id" not in kwargs and config.pad_token_id is None:
        kwargs["pad_token_id"] = pad

    # Left padding: every prompt ends where generation starts, as generate() needs for a decoder-only model.
    width = max(len(ids) for _, ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (_, ids, _) in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    clock = FirstTokenClock() if kwargs.get("num_beams", getattr(config, "num_beams", 1) or 1) == 1 else None
    # generate() may reorder or repeat the memories (beam search): give it objects of its own.
    memories = [snapshot.memory.snapshot() for _, _, snapshot in rows]
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        video_memory=memories,
        streamer=clock,
        **kwargs,
    )
    finished = time.perf_counter()
    first = None if clock is None else clock.first_token_time
    for row, (index, ids, snapshot) in enumerate(rows):
        new_ids = _answer_ids(output[row, width:].tolist(), eos, pad)
        results[index] = Answer(
            question=question_text(requests[index][0]),
            text=processor.decode(new_ids, skip_special_tokens=True).strip(),
            stream_time=snapshot.stream_time,
            frames=snapshot.frames,
            memory_tokens=snapshot.memory.get_seq_length(),
            new_tokens=len(new_ids),
            time_to_first_token=None if first is None else first - starts[index],
            latency=finished - starts[index],
            snapshot=snapshot,
        )
    return results


def _prompt_ids(model, processor, question, snapshot) -> list[int]:
    """One row's prompt ids, after the checks `generate_answer` makes (and the ones a batch row needs)."""
    if not isinstance(snapshot, StreamSnapshot):
        raise TypeError(f"snapshot must be a StreamSnapshot, got {type(snapshot).__name__}")
    if snapshot.frames == 0:
        raise NoFramesError(
            "no frame has reached the memory yet: wait for the stream (session.wait_for_frames()) and ask again"
        )
    if snapshot.memory.batch_size != 1:
        raise ValueError(f"a snapshot must hold one stream, got a memory of batch size {snapshot.memory.batch_size}")
    model.check_memory(snapshot.memory)
    inputs = build_inputs(processor, question, snapshot.memory.get_seq_length(), torch.device("cpu"))
    return inputs["input_ids"][0].tolist()


# ----------------------------------------------------------------------------------------------------------------
# Batching questions that arrive from many threads
# ----------------------------------------------------------------------------------------------------------------


def _kwargs_key(kwargs: dict) -> str:
    """Requests whose generate kwargs have the same key go in one batch (values compared by their repr)."""
    return repr(sorted((name, repr(value)) for name, value in kwargs.items()))


@dataclass
class _Request:
    question: str | list[dict]
    snapshot: StreamSnapshot
    kwargs: dict
    key: str
    started: float
    future: Future = field(default_factory=Future)


class AnswerBatcher:
    """Collects questions submitted from any thread and answers those that arrive together in one batched call.

    A background thread waits for a question, then `window_s` more for others (or until `max_batch_size` are
    waiting), groups them by their generate kwargs (only requests with equal kwargs share a batch), and answers each
    group with `answer_together` in batches of at most `max_batch_size`, one batch after the other. Each `submit`
    returns a `Future` resolved with the `Answer`, or with the exception its row failed with; a batch whose
    `generate` fails fails its own futures only. `close()` answers what was submitted, then stops the thread.

    The model is used from the batcher's thread only; it does not stop other threads from using it too.
    """

    def __init__(
        self,
        model,
        processor,
        *,
        window_s: float = 0.02,
        max_batch_size: int = 8,
        generation_kwargs: dict | None = None,
    ):
        if not window_s >= 0:
            raise ValueError(f"window_s must be >= 0 seconds, got {window_s!r}")
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        self.model = model
        self.processor = processor
        self.window_s = float(window_s)
        self.max_batch_size = max_batch_size
        self.generation_kwargs = {"max_new_tokens": 256, **(generation_kwargs or {})}
        check_batchable(self.generation_kwargs)
        self._pending: list[_Request] = []
        self._closed = False
        self._changed = threading.Condition()
        self._batches = 0
        self._thread = threading.Thread(target=self._run, name="flash-vstream-answer-batcher", daemon=True)
        self._thread.start()

    def submit(self, question: str | list[dict], snapshot: StreamSnapshot, **generate_kwargs) -> Future:
        """Queue `question` about `snapshot`; returns a `Future` of its `Answer`. Safe from any thread.

        `generate_kwargs` override the batcher's `generation_kwargs` for this question. Kwargs that cannot be
        batched (`check_batchable`) raise a `ValueError` here, and a closed batcher a `RuntimeError`; a row that
        fails (no frames yet, a blank question) fails its future.
        """
        started = time.perf_counter()
        kwargs = check_batchable({**self.generation_kwargs, **generate_kwargs})
        request = _Request(question, snapshot, kwargs, _kwargs_key(kwargs), started)
        with self._changed:
            if self._closed:
                raise RuntimeError("the AnswerBatcher is closed")
            self._pending.append(request)
            self._changed.notify_all()
        return request.future

    @property
    def batches(self) -> int:
        """Batched calls made so far."""
        return self._batches

    def close(self, cancel_pending: bool = False, timeout: float | None = None) -> None:
        """Stop taking questions; answer those already submitted (or cancel them with `cancel_pending=True`) and
        wait for the thread to end (at most `timeout` seconds). Calling it again does nothing more."""
        with self._changed:
            self._closed = True
            if cancel_pending:
                for request in self._pending:
                    request.future.cancel()
                self._pending.clear()
            self._changed.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the batching thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        taken: list[_Request] = []
        try:
            while True:
                taken = self._collect() or []
                if not taken:
                    return
                groups: dict[str, list[_Request]] = {}
                for request in taken:
                    groups.setdefault(request.key, []).append(request)
                for group in groups.values():
                    for start in range(0, len(group), self.max_batch_size):
                        self._answer(group[start : start + self.max_batch_size])
        except BaseException as error:  # logged; a bug here must not leave callers waiting forever
            logger.exception("the answer batcher stopped")
            with self._changed:
                self._closed = True
                taken, self._pending = taken + self._pending, []
            for request in taken:
                if not request.future.done():
                    request.future.set_exception(RuntimeError(f"the AnswerBatcher stopped: {error!r}"))

    def _collect(self) -> list[_Request] | None:
        """The requests of the next window (None once closed with nothing left)."""
        with self._changed:
            while not self._pending and not self._closed:
                self._changed.wait()
            if not self._pending:
                return None
            deadline = self._pending[0].started + self.window_s
            while not self._closed and len(self._pending) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            taken, self._pending = self._pending, []
            return taken

    def _answer(self, batch: list[_Request]) -> None:
        batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            results = answer_together(
                self.model,
                self.processor,
                [(r.question, r.snapshot) for r in batch],
                batch[0].kwargs,
                started=[r.started for r in batch],
            )
        except Exception as error:  # this batch's futures fail; the next batch is answered as usual
            logger.exception("a batch of %d questions failed", len(batch))
            results = [error] * len(batch)
        self._batches += 1
        for request, result in zip(batch, results):
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)
