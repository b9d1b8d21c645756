"""`flash-vstream serve` in a real browser (headless Chromium): pick the built-in stream, ask while it plays, read
the stamped answer off the page; and every bad input (a corrupt upload, a URL into the server's own network, a question before the
first frame, a tab closed mid-answer) shows a clear message while the app goes on serving other tabs.

Two apps run in this process on loopback ports: the default model (the demo model when installed) and a tiny
model slowed down on purpose, so that an answer lasts long enough to close its tab in the middle of it. Each
test is bounded by the waits in tests/browser.py (20 s a step).

Set FLASH_VSTREAM_SCREENSHOT=1 to write the page of the first test to docs/images/serve.png.
"""

import argparse
import os
import time
from pathlib import Path

import pytest
from transformers import LogitsProcessorList

from flash_vstream_hf.commands.serve import resolve
from flash_vstream_hf.serving import ServeApp, describe

from .browser import Page, chromium_or_skip, remove_profile
from .serve_helpers import SlowDown, free_port, stamp, wait_until

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # gradio's queue calls pandas APIs that pandas 3 deprecates; not this project's calls
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting':Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "serve.png"


@pytest.fixture(scope="module")
def browser():
    driver, profile = chromium_or_skip()
    yield driver
    driver.quit()
    remove_profile(profile)


def start(app: ServeApp) -> ServeApp:
    app.launch(host="127.0.0.1", port=free_port(), block=False)
    return app


@pytest.fixture(scope="module")
def default_app(browser):
    args = argparse.Namespace(model=None, device=None, dtype="auto", load_in_4bit=False, command="serve")
    app = start(ServeApp(resolve(args), max_sessions=4))
    yield app
    app.close()


@pytest.fixture(scope="module")
def slow_app(browser, tiny):
    # ~20 ms a token and at least 300 of them: an answer takes 6 s or more, time enough to close its tab
    slow = {"logits_processor": LogitsProcessorList([SlowDown(0.02)]), "min_new_tokens": 300}
    served = describe(*tiny, "tiny")
    served.max_new_tokens = 300
    app = start(ServeApp(served, max_sessions=4, generation_kwargs=slow))
    yield app
    app.close()


def assert_serves(browser, app: ServeApp) -> None:
    """A new tab still gets its stream and a stamped answer."""
    page = Page(browser, app.url)
    page.play_builtin(frames=2)
    page.ask(app.served.example_questions[0])
    page.wait(lambda: "first token" in page.answers(), "an answer in a second tab")
    assert stamp(page.answers())[1] >= 2
    page.close()


def test_ask_about_the_builtin_stream_while_it_plays(browser, default_app, tmp_path):
    page = Page(browser, default_app.url)
    page.wait(lambda: "no stream" in page.status(), "the status line")
    page.play_builtin(frames=3)
    question = default_app.served.example_questions[0]
    asked = time.perf_counter()
    page.ask(question)
    page.wait(lambda: "frames]" in page.answers(), "the stamped answer")
    first_answer = time.perf_counter() - asked
    page.wait(lambda: "first token" in page.answers(), "the whole answer")
    seconds, frames = stamp(page.answers())
    assert frames >= 3 and seconds >= 2.0  # asked after 3 frames, at 1 frame a second from t=0
    assert question in page.answers()
    page.wait(lambda: (page.video_state() or {}).get("time", 0) > 0.5, "the video to play")
    video = page.video_state()
    assert not video["paused"] and video["src"].endswith(".webm")
    status = page.status()
    for field in ("running", "frames=", "ingest=", "fps", "memory=", "tokens/", "KiB"):
        assert field in status
    print(f"\ntime to first answer in the browser: {first_answer:.2f} s; status: {status}")
    time.sleep(1.5)  # a frame or two more in the status line, then the picture for the README
    screenshot = SCREENSHOT if os.environ.get("FLASH_VSTREAM_SCREENSHOT") else tmp_path / "serve.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert page.driver.save_screenshot(str(screenshot))
    page.close()


def test_question_before_the_first_frame(browser, default_app):
    page = Page(browser, default_app.url)
    page.ask("what is on screen")
    page.wait(lambda: "no stream yet" in page.text("#message"), "the no-stream message")
    assert "⚠️" in page.answers()
    page.play_builtin(frames=1)  # the same tab goes on
    page.close()
    assert_serves(browser, default_app)


def test_corrupt_upload(browser, default_app, tmp_path):
    corrupt = tmp_path / "holiday.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    page = Page(browser, default_app.url)
    page.tab("Upload a video")
    page.wait(lambda: page.find("#upload input[type=file]"), "the upload field")
    page.find("#upload input[type=file]").send_keys(str(corrupt))
    page.wait(lambda: "cannot play upload holiday.mp4" in page.text("#message"), "the corrupt-upload message")
    assert "Invalid data" in page.text("#message") or "cannot open" in page.text("#message")
    page.close()
    assert_serves(browser, default_app)


def test_a_url_into_the_servers_own_network_is_refused(browser, default_app):
    port = free_port()  # nothing listens there, and nothing is dialled: the guard refuses first
    page = Page(browser, default_app.url)
    page.tab("Stream URL")
    page.type("#url", f"http://127.0.0.1:{port}/live.ts")
    page.click("#open-url")
    page.wait(lambda: "is refused" in page.text("#message"), "the refused-URL message")
    assert "loopback address" in page.text("#message") and "--allow-private-urls" in page.text("#message")
    page.close()
    assert_serves(browser, default_app)


def test_closed_tab_mid_answer(browser, slow_app):
    registry = slow_app.registry
    before = set(registry._viewers)
    page = Page(browser, slow_app.url)
    page.play_builtin(frames=1)
    (key,) = set(registry._viewers) - before
    viewer = registry.get(key)
    page.ask("What is moving?")
    assert wait_until(lambda: viewer.answering == 1, timeout=10), "the answer did not start"
    page.wait(lambda: "frames]" in page.answers(), "the answer to start streaming")
    page.close()  # the window goes away in the middle of the answer
    assert wait_until(lambda: key not in registry, timeout=10), "the closed tab's session was not closed"
    assert wait_until(lambda: viewer.answering == 0, timeout=5), "its answer went on being generated"
    assert viewer.answers_cancelled == 1 and viewer.answers_given == 0
    assert viewer.status().state == "stopped"
    # another tab, on the same model, is served as usual (its answer is slow too: ~6 s)
    other = Page(browser, slow_app.url)
    other.play_builtin(frames=1)
    other.ask("What is moving?")
    other.wait(lambda: "first token" in other.answers(), "the other tab's answer", timeout=25)
    other.close()
