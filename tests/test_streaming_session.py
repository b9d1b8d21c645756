"""StreamingSession: background ingest, questions at any moment from consistent snapshots, backlog policies,
bad frames and bad sources, memory save/resume, several sessions on one model, a bounded memory."""

import threading
import time

import numpy as np
import pytest

from flash_vstream_hf import FlashVStreamMemory, StreamingSession
from flash_vstream_hf.streaming import IteratorSource, NoFramesError, StreamSnapshot
from flash_vstream_hf.streaming.answering import generate_answer
from flash_vstream_hf.tiny import (
    TINY_VISION,
    synthetic_frame,
    tiny_config,
    tiny_model,
    tiny_processor,
    write_synthetic_video,
)

from .helpers import assert_same_memory

JOIN = 60  # seconds: a deadlock fails the test instead of hanging CI
ASK = {"max_new_tokens": 3, "do_sample": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "video.mp4", num_frames=120, fps=10)


def reference_snapshots(model, processor, images) -> list[FlashVStreamMemory]:
    """`[n]` = the memory after the first n frames, fed one at a time through `update_memory`."""
    memory, snapshots = model.new_memory(1), []
    snapshots.append(memory.snapshot())
    for image in images:
        pixels = processor.image_processor([image], return_tensors="pt")["pixel_values"]
        memory = model.update_memory(pixels[None], memory)
        snapshots.append(memory.snapshot())
    return snapshots


def timed_frames(count: int, interval: float) -> list:
    return [(index * interval, synthetic_frame(index)) for index in range(count)]


def test_questions_before_the_first_frame_fail_at_once(tiny):
    model, processor = tiny
    release = threading.Event()

    def late_camera():
        release.wait(JOIN)
        yield synthetic_frame(0)

    with StreamingSession(model, processor, generation_kwargs=ASK) as session:
        started = time.monotonic()
        with pytest.raises(NoFramesError, match="has not started"):
            session.ask("anything there?")
        session.start(IteratorSource(late_camera(), live=True))
        with pytest.raises(NoFramesError, match="no frame"):
            session.ask("anything now?")
        with pytest.raises(NoFramesError):
            session.ask_stream("and now?")
        assert time.monotonic() - started < 5  # not the original's 30 s of retries
        release.set()
        assert session.wait(JOIN)
        assert session.ask("and now?").frames == 1
        assert session.status().questions_failed == 3


def test_a_hundred_interleaved_questions_each_from_a_consistent_snapshot(tiny):
    model, processor = tiny
    frames = timed_frames(40, interval=0.05)  # 2 s of stream played in real time
    questions = ["What is moving?", "What colour is the background?", "Describe the scene."]
    answers = {0: [], 1: []}

    with StreamingSession(model, processor, generation_kwargs=ASK, max_batch=4) as session:
        session.start(IteratorSource(frames, fps=None), speed=1.0)
        assert session.wait_for_frames(1, timeout=JOIN)

        def asker(worker: int) -> None:
            for index in range(50):
                answers[worker].append(session.ask(questions[index % 3]))

        workers = [threading.Thread(target=asker, args=(w,)) for w in answers]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(JOIN)
            assert not worker.is_alive(), "deadlock: a question never returned"
        assert session.wait(JOIN)
        status = session.status()

    all_answers = answers[0] + answers[1]
    assert len(all_answers) == 100 and status.questions_answered == 100 and status.questions_failed == 0
    assert status.frames_ingested == 40
    for worker_answers in answers.values():  # each thread sees the memory grow, never shrink
        covered = [a.frames for a in worker_answers]
        assert covered == sorted(covered)
    covered = sorted({a.frames for a in all_answers})
    assert len(covered) >= 3, f"questions were not interleaved with ingest: {covered}"

    # Every answer is the one frame-by-frame streaming of exactly its first n frames gives.
    reference = reference_snapshots(model, processor, [image for _, image in frames])
    for answer in all_answers:
        assert answer.stream_time == pytest.approx(frames[answer.frames - 1][0])
        assert answer.memory_tokens == reference[answer.frames].get_seq_length()
        assert answer.latency >= answer.time_to_first_token > 0
    for n in covered:
        assert_same_memory(next(a for a in all_answers if a.frames == n).snapshot.memory, reference[n], exact=False)
        for question in questions:
            expected = generate_answer(model, processor, question, StreamSnapshot(reference[n], None), ASK, 0.0)
            for answer in (a for a in all_answers if a.frames == n and a.question == question):
                assert answer.text == expected.text


def test_ask_stream_yields_the_answer_ask_gives(tiny, video):
    model, processor = tiny
    with StreamingSession(model, processor, generation_kwargs={"max_new_tokens": 6, "do_sample": False}) as session:
        session.start(video)
        assert session.wait(JOIN)
        stream = session.ask_stream("What is moving?")
        pieces = list(stream)
        answer = session.ask("What is moving?")
        assert "".join(pieces).strip() == stream.answer.text == answer.text
        assert stream.answer.frames == answer.frames == 12
        assert stream.answer.time_to_first_token <= stream.answer.latency


def test_questions_as_conversations_and_with_beam_search(tiny, video):
    model, processor = tiny
    conversation = [
        {"role": "system", "content": "You describe videos."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What is moving?"}]},
    ]
    with StreamingSession(model, processor, generation_kwargs=ASK) as session:
        session.start(video)
        assert session.wait(JOIN)
        answer = session.ask(conversation)
        assert answer.question == "What is moving?"
        memory = session.snapshot().memory
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
        assert prompt.startswith("You describe videos. USER: <video>")
        inputs = processor(text=prompt, num_video_tokens=memory.get_seq_length(), return_tensors="pt")
        output = model.generate(**inputs, video_memory=memory.snapshot(), **ASK)
        expected = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer.text == expected.strip()
        with pytest.raises(ValueError, match="no .*video"):
            session.ask([{"role": "user", "content": "no video here"}])
        beams = session.ask("What is moving?", num_beams=2, num_return_sequences=2)
        assert beams.time_to_first_token is None and beams.text  # streamers do not work with beams
        assert session.snapshot().memory.batch_size == 1  # generate() expanded its own copy of the memory


def test_snapshot_at_holds_exactly_the_frames_up_to_its_time(tiny, video):
    model, processor = tiny
    session = StreamingSession(model, processor)
    early, exact, late = session.snapshot_at(2.5), session.snapshot_at(5.0), session.snapshot_at(99.0)
    session.start(video, fps=1.0)
    assert early.result(JOIN).frames == 3 and early.result().stream_time == 2.0  # frames at 0, 1, 2 s
    assert exact.result(JOIN).frames == 6 and exact.result().stream_time == 5.0  # the frame at 5 s included
    assert late.result(JOIN).frames == 12  # the video ends first: it holds every frame
    assert session.wait(JOIN)
    session.start(video)  # the memory carries on; a time already passed cannot be asked for
    assert session.wait_for_frames(12 + 3, timeout=JOIN)
    with pytest.raises(ValueError, match="already at"):
        session.snapshot_at(0.5)
    session.stop()


def test_bad_frames_are_counted_and_the_stream_goes_on(tiny):
    model, processor = tiny
    good = [synthetic_frame(i) for i in range(8)]
    bad = [None, np.zeros((48, 64), np.uint8), np.zeros((48, 64, 3), np.float32), "frame.png"]
    mixed = good[:2] + bad[:2] + good[2:5] + bad[2:] + good[5:]
    with StreamingSession(model, processor, generation_kwargs=ASK, max_batch=4) as session:
        session.start(IteratorSource(mixed))
        assert session.wait(JOIN)
        status = session.status()
        assert (status.state, status.frames_in, status.frames_ingested, status.frames_failed) == ("finished", 12, 8, 4)
        assert_same_memory(session.memory, reference_snapshots(model, processor, good)[-1], exact=False)
        assert session.ask("still fine?").frames == 8


def test_a_failed_question_is_counted_and_ingest_goes_on(tiny):
    model, processor = tiny
    with StreamingSession(model, processor, generation_kwargs=ASK) as session:
        session.start(IteratorSource(timed_frames(20, 0.05), fps=None), speed=1.0)
        assert session.wait_for_frames(2, timeout=JOIN)
        with pytest.raises(ValueError, match="bogus_option"):
            session.ask("fine?", bogus_option=1)  # generate() rejects it
        with pytest.raises(ValueError, match="empty"):
            session.ask("   ")
        assert session.wait(JOIN)
        status = session.status()
        assert status.frames_ingested == 20 and status.questions_failed == 2
        assert session.ask("fine now?").frames == 20


def test_bad_sources_give_clear_errors_and_leave_the_session_usable(tiny, video, tmp_path):
    model, processor = tiny
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)

    def dies_after_three():
        for index in range(3):
            yield synthetic_frame(index)
        raise ConnectionError("camera unplugged")

    with StreamingSession(model, processor, generation_kwargs=ASK) as session:
        with pytest.raises(FileNotFoundError, match="missing.mp4"):
            session.start(tmp_path / "missing.mp4")
        with pytest.raises(ValueError, match="corrupt.mp4"):
            session.start(corrupt)
        with pytest.raises(ConnectionError, match="cannot open live source"):
            session.start("rtsp://127.0.0.1:9/nothing")
        with pytest.raises(TypeError, match="source must be"):
            session.start(42)
        assert session.status().state == "idle" and not session.running

        session.start(IteratorSource([]))  # zero frames
        assert session.wait(JOIN) and session.status().state == "finished"
        with pytest.raises(NoFramesError):
            session.ask("anything?")

        session.start(IteratorSource(dies_after_three()))
        assert session.wait(JOIN)
        status = session.status()
        assert status.state == "failed" and "camera unplugged" in status.error and status.frames_ingested == 3

        session.start(video)  # the memory carries on from the 3 frames
        assert session.wait(JOIN)
        assert session.status().state == "finished" and session.status().error is None
        assert session.ask("and now?").frames == 3 + 12


def test_live_sources_drop_the_oldest_frames_and_files_drop_none(tiny):
    model, processor = tiny
    images = [synthetic_frame(i) for i in range(150)]
    for live in (True, False):
        with StreamingSession(model, processor, max_backlog=4, max_batch=1) as session:
            session.start(IteratorSource(images, frame_rate=1.0, live=live))
            assert session.wait(JOIN)
            status = session.status()
        assert status.frames_in == 150
        assert status.frames_ingested + status.frames_dropped == 150
        assert status.memory_frames == status.frames_ingested
        if live:
            assert status.frames_dropped > 0
            assert status.stream_time == 149.0  # the newest frame is never the one dropped
        else:
            assert status.frames_dropped == 0


def test_stop_ends_a_paced_stream_promptly(tiny, video):
    model, processor = tiny
    session = StreamingSession(model, processor, generation_kwargs=ASK)
    session.start(video, speed=1.0)  # 12 s of video in real time
    assert session.wait_for_frames(1, timeout=JOIN)
    started = time.monotonic()
    session.stop()
    assert time.monotonic() - started < 5 and not session.running
    status = session.status()
    assert status.state == "stopped" and status.frames_ingested < 12
    assert session.ask("what was there?").frames == status.frames_ingested


def test_a_reader_stuck_in_a_live_read_does_not_leak_into_the_next_stream(tiny):
    model, processor = tiny
    release = threading.Event()

    def stuck_camera():
        yield synthetic_frame(0)
        release.wait(JOIN)  # a live read that does not return
        yield from (synthetic_frame(i) for i in range(1, 4))

    with StreamingSession(model, processor) as session:
        session.start(IteratorSource(stuck_camera(), live=True))
        assert session.wait_for_frames(1, timeout=JOIN)
        started = time.monotonic()
        session.stop()
        assert time.monotonic() - started < 5
        session.start(IteratorSource(timed_frames(10, 0.05), fps=None), speed=1.0)
        release.set()  # the old reader wakes up while the new stream runs
        assert session.wait(JOIN)
        status = session.status()
    assert (status.frames_in, status.frames_ingested, status.memory_frames) == (11, 11, 11)


def test_memory_saved_mid_stream_resumes_as_if_uninterrupted(tiny, tmp_path):
    model, processor = tiny
    images = [synthetic_frame(i) for i in range(30)]
    with StreamingSession(model, processor) as first:
        first.start(IteratorSource(images[:17]))
        assert first.wait(JOIN)
        first.save_memory(tmp_path / "memory.safetensors")
    resumed = StreamingSession(model, processor, memory=FlashVStreamMemory.load(tmp_path / "memory.safetensors"))
    resumed.start(IteratorSource(images[17:]))
    assert resumed.wait(JOIN)
    assert_same_memory(resumed.memory, reference_snapshots(model, processor, images)[-1], exact=False)


def test_sessions_sharing_one_model_do_not_mix(tiny):
    model, processor = tiny
    streams = [[synthetic_frame(i) for i in range(20)], [synthetic_frame(100 + 3 * i) for i in range(20)]]
    sessions = [StreamingSession(model, processor, generation_kwargs=ASK, max_batch=3) for _ in streams]
    for session, images in zip(sessions, streams):
        session.start(IteratorSource(images))
    assert all(session.wait_for_frames(1, timeout=JOIN) for session in sessions)
    answers = {}

    def ask(index: int) -> None:
        answers[index] = [sessions[index].ask("What is moving?") for _ in range(5)]

    askers = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for thread in askers:
        thread.start()
    for thread in askers:
        thread.join(JOIN)
        assert not thread.is_alive()
    for session, images in zip(sessions, streams):
        assert session.wait(JOIN)
        reference = reference_snapshots(model, processor, images)
        assert_same_memory(session.memory, reference[-1], exact=False)
    for index, images in enumerate(streams):
        reference = reference_snapshots(model, processor, images)
        for answer in answers[index]:
            assert_same_memory(answer.snapshot.memory, reference[answer.frames], exact=False)


def test_memory_stays_the_same_size_over_five_thousand_frames():
    # The tiny memory layout with less compute per frame (16 px frames, one vision layer, one k-means iteration),
    # so 5,000 frames take seconds.
    vision = {**TINY_VISION, "image_size": 16, "num_hidden_layers": 1}
    config = tiny_config(kmeans_max_iter=1, vision_config=vision)
    model, processor = tiny_model(config), tiny_processor(config)
    frames = (np.full((8, 8, 3), index % 256, np.uint8) for index in range(5000))
    sizes = {}
    with StreamingSession(model, processor, max_batch=256, max_backlog=256) as session:
        checkpoints = [session.snapshot_at(t) for t in (9.0, 999.0)]
        session.start(IteratorSource(frames))
        assert session.wait(120)
        status = session.status()
    assert status.frames_ingested == 5000 and status.frames_failed == 0
    early, middle = (future.result() for future in checkpoints)
    for snapshot in (early, middle, session.snapshot()):
        sizes[snapshot.frames] = (
            snapshot.memory.nbytes,
            {n: t.shape for n, t in snapshot.memory.state.tensors().items()},
        )
    assert sorted(sizes) == [10, 1000, 5000]
    assert sizes[10] == sizes[1000] == sizes[5000]
    assert status.memory_bytes == early.memory.nbytes
    assert status.memory_tokens == processor.num_video_tokens(5000) == middle.memory.get_seq_length()


def test_snapshot_at_after_the_stream_ended_answers_at_once(tiny):
    model, processor = tiny
    with StreamingSession(model, processor) as session:
        session.start(IteratorSource(timed_frames(5, interval=1.0), fps=None))
        assert session.wait(JOIN)
        past = session.snapshot_at(99.0)  # the stream ended at 4 s: the last snapshot, marked as earlier
        assert past.done() and past.result().frames == 5 and past.result().stream_time == 4.0
        assert past.result().stream_ended
        exact = session.snapshot_at(4.0)
        assert exact.done() and exact.result().frames == 5 and not exact.result().stream_ended
        with pytest.raises(ValueError, match="already at 4.000 s"):
            session.snapshot_at(1.0)

        session.start(IteratorSource(timed_frames(100, interval=0.05), fps=None), speed=1.0)
        assert session.wait_for_frames(5 + 1, timeout=JOIN)
        session.stop()
        stopped = session.snapshot_at(99.0)
        assert stopped.done()
        with pytest.raises(RuntimeError, match="stopped"):
            stopped.result()


def test_no_frames_error_is_exported_from_the_package():
    import flash_vstream_hf
    from flash_vstream_hf import NoFramesError as top_level
    from flash_vstream_hf.streaming import NoFramesError as streaming_level

    assert top_level is streaming_level is NoFramesError
    assert "NoFramesError" in flash_vstream_hf.__all__


def test_on_frame_sees_every_frame_in_order_and_a_failing_listener_does_not_stop_ingest(tiny):
    model, processor = tiny
    seen = []

    def listener(view: StreamSnapshot):
        seen.append((view.frames, view.stream_time))
        if view.frames == 2:
            raise RuntimeError("a listener bug")

    with StreamingSession(model, processor, on_frame=listener, generation_kwargs=ASK) as session:
        session.start(IteratorSource(timed_frames(5, 1.0)))
        assert session.wait(JOIN)
        assert session.status().frames_ingested == 5
    assert seen == [(n, float(n - 1)) for n in range(1, 6)]
