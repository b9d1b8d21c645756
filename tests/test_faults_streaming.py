"""Fault injection on StreamingSession: racing start/stop, hostile iterators and bad timestamps, non-finite frames,
huge frames, sources that fail mid-stream. Each test is bounded in time (a hang fails a join, never CI)."""

import math
import random
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from flash_vstream_hf.processing.video_io import VideoFrame
from flash_vstream_hf.streaming import FrameSource, IteratorSource, StreamingSession, StreamInterruptedError
from flash_vstream_hf.streaming.sources import MAX_ASPECT_RATIO
from flash_vstream_hf.tiny import synthetic_frame

JOIN = 30  # seconds: a deadlock fails the test instead of hanging CI

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ingest_threads(session: StreamingSession) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"flash-vstream-ingest-{id(session):x}" and t.is_alive()]


def reader_threads(session: StreamingSession) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"flash-vstream-reader-{id(session):x}" and t.is_alive()]


def endless_camera(interval: float = 0.005):
    """A live camera that never ends on its own: a small frame every `interval` seconds."""
    index = 0
    while True:
        time.sleep(interval)
        yield synthetic_frame(index, width=16, height=16)
        index += 1


class SlowToOpen:
    """An iterable whose `iter()` takes a while, as opening a camera does: it widens the window of a start() race."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds

    def __iter__(self):
        time.sleep(self.seconds)
        return endless_camera()


def assert_memory_frozen(session: StreamingSession, seconds: float = 0.2) -> None:
    """Nothing writes the memory any more: the same snapshot object and the same frame count for `seconds`."""
    view, frames = session.snapshot(), session.memory.frames_seen
    time.sleep(seconds)
    assert session.snapshot() is view and session.memory.frames_seen == frames == view.frames


def wait_for_readers(session: StreamingSession) -> None:
    deadline = time.monotonic() + JOIN
    while reader_threads(session) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not reader_threads(session)


# -- start/stop races -----------------------------------------------------------------------------------------------


def test_two_threads_starting_at_once_start_exactly_one_stream(tiny):
    model, processor = tiny
    session = StreamingSession(model, processor)
    for _ in range(6):
        barrier, outcomes = threading.Barrier(2), []

        def start():
            barrier.wait(JOIN)
            try:
                session.start(IteratorSource(SlowToOpen(), live=True))
                outcomes.append("started")
            except RuntimeError as error:
                outcomes.append(str(error))

        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN)
        assert outcomes.count("started") == 1, outcomes
        assert "already" in next(o for o in outcomes if o != "started")
        assert session.status().state == "running" and len(ingest_threads(session)) == 1
        session.stop()
        assert session.status().state == "stopped" and not session.running
        assert not ingest_threads(session)
        assert_memory_frozen(session)


def test_racing_start_and_stop_from_several_threads_always_ends_consistent(tiny):
    model, processor = tiny
    session = StreamingSession(model, processor, max_backlog=4)
    jitter = random.Random(0)
    errors = []
    for _ in range(20):
        barrier = threading.Barrier(4)
        delays = [jitter.uniform(0, 0.02) for _ in range(4)]

        def starter(delay: float):
            barrier.wait(JOIN)
            time.sleep(delay)
            try:
                session.start(IteratorSource(SlowToOpen(0.01), live=True))
            except RuntimeError as error:  # another thread's stream is running: the documented refusal
                if "already" not in str(error):
                    errors.append(error)

        def stopper(delay: float):
            barrier.wait(JOIN)
            time.sleep(delay)
            session.stop()

        threads = [threading.Thread(target=f, args=(d,)) for f, d in zip((starter, starter, stopper, stopper), delays)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN)
            assert not thread.is_alive(), "deadlock between start() and stop()"
        assert len(ingest_threads(session)) <= 1
        session.stop()
        status = session.status()
        assert status.state in ("idle", "stopped", "finished") and not session.running
        assert not ingest_threads(session)
        assert_memory_frozen(session, seconds=0.05)
    assert not errors
    wait_for_readers(session)
    status = session.status()
    assert status.memory_frames == status.frames_ingested == session.memory.frames_seen
    assert status.frames_in == status.frames_ingested + status.frames_dropped + status.frames_failed


def test_stop_during_a_slow_start_leaves_no_stream_behind(tiny):
    model, processor = tiny
    session = StreamingSession(model, processor)
    starter = threading.Thread(target=session.start, args=(IteratorSource(SlowToOpen(0.2), live=True),))
    starter.start()
    time.sleep(0.05)  # start() is opening the source
    assert session.status().state == "starting" and session.running
    with pytest.raises(RuntimeError, match="already"):
        session.start(IteratorSource([synthetic_frame(0)]))
    session.stop()  # waits for the start to finish, then stops that stream
    starter.join(JOIN)
    assert session.status().state == "stopped" and not ingest_threads(session)
    assert_memory_frozen(session)


# -- hostile iterators and bad timestamps ---------------------------------------------------------------------------


def test_bad_timestamps_are_skipped_and_counted_and_the_stream_goes_on(tiny):
    model, processor = tiny
    stamps = [0.0, math.nan, 1.0, math.inf, "abc", 2.0, None, -math.inf, 3.0, np.float32(4.0)]
    items = [(stamp, synthetic_frame(i)) for i, stamp in enumerate(stamps)]
    with StreamingSession(model, processor) as session:
        session.start(IteratorSource(items, fps=None))
        assert session.wait(JOIN)
        status = session.status()
    assert (status.state, status.error) == ("finished", None)
    assert (status.frames_in, status.frames_ingested, status.frames_failed, status.bad_timestamps) == (10, 5, 5, 5)
    assert status.stream_time == 4.0
    assert "bad=5" in status.line()


def test_timestamps_going_back_start_a_new_segment_and_lose_nothing(tiny):
    model, processor = tiny
    recording = [(float(t), synthetic_frame(t)) for t in range(5)]  # two 5 s recordings, concatenated
    with StreamingSession(model, processor) as session:
        late = session.snapshot_at(7.0)
        session.start(IteratorSource(recording + recording))
        assert session.wait(JOIN)
        status = session.status()
    assert (status.state, status.frames_ingested, status.frames_failed) == ("finished", 10, 0)
    assert status.timestamp_resets == 1 and status.stream_time == 9.0  # 0..4 s, then 5..9 s
    assert late.result(JOIN).frames == 8  # the second recording's frames at 5, 6 and 7 s of stream time


def test_hostile_items_are_bad_frames_not_the_end_of_the_stream(tiny):
    model, processor = tiny

    class TruncatedImage:  # what PIL gives for a truncated file: fine until it is decoded
        def getbands(self):
            return ("R", "G", "B")

        def convert(self, mode):
            raise OSError("image file is truncated (3 bytes not processed)")

    hostile = [42, None, {"frame": 1}, (1.0, 2.0, 3.0), TruncatedImage(), b"\x00" * 10, np.zeros((0, 4, 3), np.uint8)]
    items = [synthetic_frame(0), *hostile, synthetic_frame(1)]
    with StreamingSession(model, processor) as session:
        session.start(IteratorSource(items))
        assert session.wait(JOIN)
        status = session.status()
    assert (status.state, status.frames_ingested, status.frames_failed, status.frames_in) == ("finished", 2, 7, 9)


def test_an_iterator_whose_close_fails_still_finishes(tiny):
    model, processor = tiny

    class BadClose:
        def __init__(self):
            self.items = iter([synthetic_frame(0), synthetic_frame(1)])

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.items)

        def close(self):
            raise RuntimeError("close failed")

    with StreamingSession(model, processor) as session:
        session.start(IteratorSource(BadClose()))
        assert session.wait(JOIN)
        status = session.status()
    assert (status.state, status.frames_ingested, status.error) == ("finished", 2, None)


def test_a_custom_source_yielding_junk_or_going_back_in_time_only_loses_those_frames(tiny):
    model, processor = tiny

    class JunkSource(FrameSource):
        def __init__(self):
            super().__init__(fps=None)

        def _open(self):
            pass

        def _frames(self, stop):
            yield VideoFrame(0.0, synthetic_frame(0))
            yield synthetic_frame(1)  # not a VideoFrame: no timestamp
            yield VideoFrame(2.0, synthetic_frame(2))
            yield VideoFrame(1.0, synthetic_frame(3))  # back in time: a custom source must re-base (StreamClock)
            yield VideoFrame("3", synthetic_frame(4))  # a string is not a number of seconds
            yield VideoFrame(3.0, synthetic_frame(5))

    with StreamingSession(model, processor) as session:
        session.start(JunkSource())
        assert session.wait(JOIN)
        status = session.status()
    assert (status.state, status.frames_in, status.frames_ingested, status.bad_timestamps) == ("finished", 6, 3, 3)
    assert status.stream_time == 3.0 and status.frames_failed == 3


def test_cancelled_and_unplaceable_snapshot_requests_do_not_disturb_the_stream(tiny):
    model, processor = tiny
    with StreamingSession(model, processor) as session:
        for bad in (math.nan, math.inf, "5"):
            with pytest.raises(ValueError, match="finite number"):
                session.snapshot_at(bad)
        cancelled, kept, late = session.snapshot_at(1.0), session.snapshot_at(2.0), session.snapshot_at(99.0)
        assert cancelled.cancel() and late.cancel()
        session.start(IteratorSource([(float(t), synthetic_frame(t)) for t in range(5)]))
        assert session.wait(JOIN)
        assert (session.status().state, session.status().frames_ingested) == ("finished", 5)
        assert kept.result(JOIN).frames == 3 and cancelled.cancelled()


# -- sources that end early -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [ConnectionError("camera unplugged"), StreamInterruptedError("decode error")])
def test_a_source_failing_mid_stream_says_so_and_when(tiny, error):
    model, processor = tiny

    def fails_after_three():
        for index in range(3):
            yield float(index), synthetic_frame(index)
        raise error

    with StreamingSession(model, processor) as session:
        future = session.snapshot_at(5.0)
        session.start(IteratorSource(fails_after_three()))
        assert session.wait(JOIN)
        status = session.status()
        with pytest.raises(StreamInterruptedError, match=r"failed at 2\.0 s, before 5\.0 s") as raised:
            future.result(JOIN)
        assert raised.value.stream_time == 2.0
        later = session.snapshot_at(9.0)  # after the failure: at once, the same error
        assert later.done() and isinstance(later.exception(), StreamInterruptedError)
    assert (status.state, status.failed_at, status.frames_ingested) == ("failed", 2.0, 3)
    assert str(error) in status.error and "error at 00:02.0" in status.line()


def test_a_source_raising_a_base_exception_is_recorded_not_lost(tiny):
    model, processor = tiny

    def exits():
        yield synthetic_frame(0)
        raise SystemExit(3)

    with StreamingSession(model, processor) as session:
        session.start(IteratorSource(exits()))
        assert session.wait(JOIN)
        status = session.status()
    assert status.state == "failed" and "SystemExit" in status.error and status.failed_at == 0.0


# -- non-finite and huge frames -------------------------------------------------------------------------------------


class FramesSource(FrameSource):
    """A custom source yielding `VideoFrame`s as they are (no conversion): what a user's subclass may do."""

    def __init__(self, images):
        super().__init__(fps=None)
        self.images = images

    def _open(self):
        pass

    def _frames(self, stop):
        for index, image in enumerate(self.images):
            yield VideoFrame(float(index), image)


def test_non_finite_frames_never_reach_the_model(tiny, monkeypatch):
    model, processor = tiny
    seen = []
    encode = model.model.get_frame_features

    def recording_encode(pixels, *args, **kwargs):
        seen.append(pixels.clone())
        return encode(pixels, *args, **kwargs)

    monkeypatch.setattr(model.model, "get_frame_features", recording_encode)
    nan_image = Image.fromarray(np.full((48, 64), np.nan, np.float32), mode="F")
    inf_image = Image.fromarray(np.full((48, 64), np.inf, np.float32), mode="F")
    poisoned = [
        np.full((48, 64, 3), np.nan, np.float32),
        np.full((48, 64, 3), np.inf),
        torch.full((48, 64, 3), float("nan")),
        nan_image,
        inf_image,
    ]
    for source in (IteratorSource([synthetic_frame(0), *poisoned, synthetic_frame(1)]),
                   FramesSource([synthetic_frame(0), *poisoned, synthetic_frame(1)])):  # fmt: skip
        seen.clear()
        with StreamingSession(model, processor, warm_up=False) as session:
            session.start(source)
            assert session.wait(JOIN)
            status = session.status()
        assert (status.state, status.frames_ingested, status.frames_failed) == ("finished", 2, 5)
        assert sum(pixels.shape[1] for pixels in seen) == 2
        assert all(torch.isfinite(pixels).all() for pixels in seen)
        assert all(torch.isfinite(t).all() for t in session.memory.state.tensors().values())


def test_huge_frames_are_downscaled_before_they_are_queued(tiny):
    model, processor = tiny
    side = 2 * model.config.vision_config.image_size  # the documented default bound of the shorter side
    release = threading.Event()

    def huge_frames():
        for index in range(6):
            yield np.full((3000, 4000, 3), index * 40, np.uint8)  # 36 MB each

    session = StreamingSession(model, processor, max_backlog=4, max_batch=1)
    assert session.max_frame_side == side
    ingest_batch = session._ingest_batch

    def stalled_ingest(frames, stop):  # the model is busy: frames pile up in the backlog
        release.wait(JOIN)
        return ingest_batch(frames, stop)

    session._ingest_batch = stalled_ingest
    with session:
        session.start(IteratorSource(huge_frames()))
        deadline = time.monotonic() + JOIN
        while session.status().backlog < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        status = session.status()
        assert status.backlog == 4
        width = round(4000 * side / 3000)
        assert status.backlog_bytes == 4 * side * width * 3  # not 4 x 36 MB
        assert status.backlog_bytes <= 4 * MAX_ASPECT_RATIO * side * side * 3
        release.set()
        assert session.wait(JOIN)
        status = session.status()
    assert (status.state, status.frames_ingested, status.frames_failed, status.backlog_bytes) == ("finished", 6, 0, 0)
