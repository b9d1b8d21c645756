"""The `serve` app through its Python API (no browser): per-tab viewers on one model, stamped streamed answers,
every bad input a clear `UserError` that leaves the other sessions serving, answers stopped when their tab
closes, the bounded registry, the webcam feed, and which model `serve` picks."""

import argparse
import threading

import numpy as np
import pytest
from transformers import LogitsProcessorList

from flash_vstream_hf.commands import serve as serve_command
from flash_vstream_hf.serving import ServeApp, UserError, describe, loading
from flash_vstream_hf.serving.builtin import BuiltinStream, write_playback_video
from flash_vstream_hf.serving.webcam import WebcamFeed
from flash_vstream_hf.streaming import IteratorSource

from .serve_helpers import SlowDown, blocking_frames, stamp, wait_until

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = [BuiltinStream("short a", seed=1, seconds=20), BuiltinStream("short b", seed=2, seconds=20)]


@pytest.fixture
def app(tiny):
    app = ServeApp(describe(*tiny, "tiny"), streams=SHORT, max_sessions=3)
    yield app
    app.close()


def answer(viewer, question="What is moving?", **kwargs) -> str:
    return list(viewer.ask(question, **kwargs))[-1]


def test_two_sessions_share_the_model_with_their_own_memory(app):
    first, second = app.registry.get("tab-1"), app.registry.get("tab-2")
    assert first.play_builtin("short a").endswith(".webm")
    second.play_builtin("short b")
    assert first.wait_for_frames(3, timeout=20) and second.wait_for_frames(2, timeout=20)
    assert first.model is second.model
    assert first.status().source != second.status().source
    assert first._session.memory is not second._session.memory
    pieces = list(first.ask("What is moving?", max_new_tokens=4))
    seconds, frames = stamp(pieces[0])  # the stamp is there from the first piece on
    assert frames >= 3 and seconds == frames - 1  # 1 frame a second from t=0
    assert "first token" in pieces[-1] and stamp(pieces[-1]) == (seconds, frames)
    line = first.status_line()
    assert line.startswith("built-in stream short a |") and "frames=" in line and "memory=" in line and "fps" in line


def test_bad_inputs_are_user_errors_and_the_others_keep_serving(app, tmp_path):
    healthy, other = app.registry.get("healthy"), app.registry.get("other")
    healthy.play_builtin("short a")
    with pytest.raises(UserError, match="no stream yet"):
        answer(other)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(UserError, match="cannot play upload corrupt.mp4"):
        other.play_file(str(corrupt), name="corrupt.mp4")
    with pytest.raises(UserError, match="127.0.0.1:9/live.ts is refused: 127.0.0.1 is a loopback address"):
        other.play_url("http://127.0.0.1:9/live.ts")  # the server's own network (tests/test_url_guard.py)
    for url in ("file:///etc/passwd", "/dev/video0", "not a url"):  # the server's own files and devices
        with pytest.raises(UserError, match="scheme is not opened for a visitor|holds spaces"):
            other.play_url(url)
    with pytest.raises(UserError, match="no built-in stream"):
        other.play_builtin("nope")
    with pytest.raises(UserError, match="type a question"):
        answer(healthy, "  ")
    assert healthy.wait_for_frames(2, timeout=20)
    assert "first token" in answer(healthy, max_new_tokens=3)
    assert other.status() is None  # nothing half-started was left behind


def test_question_before_the_first_frame(app, config):
    viewer = app.registry.get("tab")
    frames = blocking_frames(np.zeros((32, 32, 3), np.uint8))
    viewer._start(IteratorSource(frames, fps=1.0), "a slow camera")  # started, but no frame yet
    with pytest.raises(UserError, match="no frame has reached the memory yet"):
        answer(viewer)
    frames.release()
    assert viewer.wait_for_frames(1, timeout=20)
    assert stamp(answer(viewer, max_new_tokens=2))[1] >= 1


def test_an_answer_stops_when_its_reader_goes_or_its_tab_closes(tiny):
    slow = {"logits_processor": LogitsProcessorList([SlowDown(0.02)]), "min_new_tokens": 200}
    app = ServeApp(describe(*tiny, "tiny"), streams=SHORT, generation_kwargs=slow)
    try:
        viewer = app.registry.get("tab")
        viewer.play_builtin("short a")
        assert viewer.wait_for_frames(1, timeout=20)
        answers = viewer.ask("What is moving?", max_new_tokens=200)
        next(answers)
        assert viewer.answering == 1
        answers.close()  # the reader went away (the server closes the generator of a dropped request)
        assert wait_until(lambda: viewer.answering == 0, timeout=2) and viewer.answers_cancelled == 1

        answers = viewer.ask("What is moving?", max_new_tokens=200)
        next(answers)
        app.registry.close("tab")  # the tab closed: its generator may never be touched again
        assert wait_until(lambda: viewer.answering == 0, timeout=2) and viewer.answers_cancelled == 2
        assert viewer.status().state == "stopped" and "tab" not in app.registry
        with pytest.raises(UserError, match="session has ended"):
            viewer.play_builtin("short a")
    finally:
        app.close()


def test_registry_is_bounded_and_reaps_idle_sessions(app):
    for key in ("a", "b", "c"):
        app.registry.get(key).play_builtin("short a")
    with pytest.raises(UserError, match="server is busy: 3 streams"):
        app.registry.get("d")
    assert app.registry.get("a") is app.registry.get("a")
    app.registry.get("b").last_used -= 1000
    assert app.registry.reap() == 1 and "b" not in app.registry
    assert app.registry.get("d") is not None  # the slot is free again
    assert app.registry.close("a") and not app.registry.close("a")
    with pytest.raises(UserError, match="no session"):
        app.registry.get(None)


def test_webcam_frames_become_a_live_stream(app):
    viewer = app.registry.get("cam")
    for _ in range(3):
        viewer.push_webcam(np.full((48, 64, 3), 120, np.uint8))
        threading.Event().wait(0.6)  # the page sends a frame every half second; 1 frame a second is kept
    assert viewer.wait_for_frames(1, timeout=20)
    status = viewer.status()
    assert status.source == "webcam" and status.state == "running"
    assert "frames]" in answer(viewer, max_new_tokens=2)
    viewer.play_builtin("short a")  # another source ends the camera's stream
    assert viewer._webcam is None


def test_webcam_feed_is_bounded_and_ends():
    feed = WebcamFeed(max_waiting=2, idle_timeout=0.2)
    for value in range(5):
        feed.push(np.full((2, 2, 3), value, np.uint8))
    items = list(feed)  # no more frames: ends after the idle timeout
    assert [int(image[0, 0, 0]) for _, image in items] == [3, 4]  # the oldest went
    assert items[0][0] <= items[1][0]


def test_playback_video_has_one_frame_a_second(tmp_path):
    import av

    path = write_playback_video(BuiltinStream("x", seed=3, seconds=5), 32, tmp_path / "x.webm")
    with av.open(path) as container:
        frames = list(container.decode(video=0))
    assert [round(frame.time) for frame in frames] == [0, 1, 2, 3, 4]
    assert frames[0].width >= 256 and frames[0].height >= 256


def serve_args(**overrides) -> argparse.Namespace:
    values = {"model": None, "device": None, "dtype": "auto", "load_in_4bit": False, "command": "serve"}
    return argparse.Namespace(**{**values, **overrides})


def test_default_model_is_the_demo_model_when_installed_else_tiny(monkeypatch):
    if loading.demo_checkpoint() is not None:
        served = serve_command.resolve(serve_args())
        assert served.name == "demo" and served.max_new_tokens == 4 and "trained on synthetic" in served.note
    monkeypatch.setattr(loading, "demo_checkpoint", lambda: None)  # the loader or its checkpoint is missing
    assert loading.default_model() == "tiny"
    served = serve_command.resolve(serve_args())
    assert served.name == "tiny" and "RANDOM WEIGHTS" in served.note
    with pytest.raises(SystemExit):
        serve_command.resolve(serve_args(model="demo"))


def test_model_can_be_a_checkpoint_folder(tiny, tmp_path, capsys):
    checkpoint = tmp_path / "converted"
    for part in tiny:
        part.save_pretrained(checkpoint)
    served = serve_command.resolve(serve_args(model=str(checkpoint)))
    assert served.name == str(checkpoint) and served.model.config.model_type == "flash_vstream"
    with pytest.raises(SystemExit):
        serve_command.resolve(serve_args(model=str(checkpoint / "missing")))
    assert "no such folder" in capsys.readouterr().err
