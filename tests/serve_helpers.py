"""Helpers for the `serve` tests: a deliberately slow model, free ports, the stamps answers carry."""

import re
import socket
import threading
import time

import torch
from transformers import LogitsProcessor

# "[t=00:03.0 · 4 frames]": the stream time and the frames the answer saw
STAMP = re.compile(r"\[t=(\d\d):(\d\d\.\d) · (\d+) frames\]")


class SlowDown(LogitsProcessor):
    """Sleeps `seconds` per generated token: makes an answer last long enough to be interrupted on purpose."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        time.sleep(self.seconds)
        return scores


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def stamp(text: str) -> tuple[float, int]:
    """`(stream time in seconds, frames)` of the first stamp in `text`; AssertionError if there is none."""
    found = STAMP.search(text)
    assert found, f"no stream-time stamp in {text!r}"
    return int(found[1]) * 60 + float(found[2]), int(found[3])


class blocking_frames:
    """An iterable of frames that yields nothing until `release()`: a stream that has started but whose first
    frame has not come yet."""

    def __init__(self, frame):
        self.frame = frame
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()

    def __iter__(self):
        self.released.wait(30)
        for index in range(3):
            yield index, self.frame
