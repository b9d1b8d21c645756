"""Fault injection on the Inference Endpoints handler: every hostile or malformed request is refused at the
boundary with a `PayloadError` (a `ValueError`) naming the field, before anything reaches the model; a valid
request decodes its frames one at a time and encodes them a few at a time."""

from __future__ import annotations

import math
import struct
import time
import weakref
import zlib
from functools import lru_cache
from pathlib import Path

import pytest
from PIL import Image

from flash_vstream_hf.conversion import handler as endpoint
from flash_vstream_hf.conversion.handler import EndpointHandler
from flash_vstream_hf.tiny import synthetic_frame, write_synthetic_video

from .helpers import b64, png

QUESTION = "What happens?"
GENERATE = {"max_new_tokens": 2, "do_sample": False}
BOMB_SIDE = 13_000  # 169 megapixels: the tester's pair cost +3.4 GB when decoded


class Untouchable:
    """A model or processor that fails the test as soon as the handler reaches for it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        raise AssertionError(f"a refused request reached {self._name}.{attribute}")


@pytest.fixture
def refusing():
    """A handler whose model and processor raise if touched: what a refused request must never reach."""
    handler = EndpointHandler.__new__(EndpointHandler)
    handler.model, handler.processor, handler.video_io = Untouchable("model"), Untouchable("processor"), None
    return handler


@pytest.fixture
def serving(tiny):
    """A handler around the tiny model, as `EndpointHandler(path)` builds one around a converted repo."""
    model, processor = tiny
    return EndpointHandler.from_model(model, processor)


@lru_cache(maxsize=None)
def png_bomb(width: int, height: int) -> bytes:
    """A valid black RGB PNG of `width` x `height`, compressed while it is written (no full-size buffer here)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor, row, rows_per_block = zlib.compressobj(9), b"\x00" * (1 + 3 * width), 64
    data = bytearray()
    for start in range(0, height, rows_per_block):
        data += compressor.compress(row * min(rows_per_block, height - start))
    data += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(data)) + chunk(b"IEND", b"")


def frames_request(count: int = 3, **inputs) -> dict:
    return {"inputs": {"frames": [png(synthetic_frame(i)) for i in range(count)], "questions": [QUESTION], **inputs},
            "parameters": dict(GENERATE)}  # fmt: skip


def refusal(handler, request) -> endpoint.PayloadError:
    """The `PayloadError` the handler raises for `request` (failing the test when it answers instead)."""
    with pytest.raises(ValueError) as raised:
        handler(request)
    error = raised.value
    assert isinstance(error, endpoint.PayloadError), f"{type(error).__name__}: {error}"
    assert str(error).startswith(f"{error.field}: ") and 400 <= error.status < 500
    return error


def with_inputs(**changes) -> dict:
    request = frames_request()
    request["inputs"].update(changes)
    return request


def with_parameters(**changes) -> dict:
    request = frames_request()
    request["parameters"].update(changes)
    return request


NAN, INF = float("nan"), float("inf")

MALFORMED = {
    # questions
    "questions as a string": (with_inputs(questions=QUESTION), "inputs.questions"),
    "no question": (with_inputs(questions=[]), "inputs.questions"),
    "questions missing": ({"inputs": {"frames": frames_request()["inputs"]["frames"]}}, "inputs.questions"),
    "empty question": (with_inputs(questions=["  "]), "inputs.questions[0]"),
    "question not a string": (with_inputs(questions=[42]), "inputs.questions[0]"),
    "question object without text": (with_inputs(questions=[{"time": 1.0}]), "inputs.questions[0].question"),
    "question object with another name": (with_inputs(questions=[{"text": QUESTION}]), "inputs.questions[0].text"),
    "question object with an unknown key": (
        with_inputs(questions=[{"question": QUESTION, "at": 2.0}]), "inputs.questions[0].at"),
    "negative time": (with_inputs(questions=[{"question": QUESTION, "time": -1.0}]), "inputs.questions[0].time"),
    "NaN time": (with_inputs(questions=[{"question": QUESTION, "time": NAN}]), "inputs.questions[0].time"),
    "infinite time": (with_inputs(questions=[{"question": QUESTION, "time": INF}]), "inputs.questions[0].time"),
    "boolean time": (with_inputs(questions=[{"question": QUESTION, "time": True}]), "inputs.questions[0].time"),
    "time as a string": (with_inputs(questions=[{"question": QUESTION, "time": "2.5"}]), "inputs.questions[0].time"),
    # fps
    "NaN fps": (with_inputs(fps=NAN), "inputs.fps"),
    "negative fps": (with_inputs(fps=-1.0), "inputs.fps"),
    "zero fps": (with_inputs(fps=0), "inputs.fps"),
    "infinite fps": (with_inputs(fps=INF), "inputs.fps"),
    "boolean fps": (with_inputs(fps=True), "inputs.fps"),
    "fps as a string": (with_inputs(fps="2"), "inputs.fps"),
    "fps past the limit": (with_inputs(fps=endpoint.MAX_FPS * 2), "inputs.fps"),
    # frames and video
    "empty frame list": (with_inputs(frames=[]), "inputs.frames"),
    "frames not a list": (with_inputs(frames=png(synthetic_frame(0))), "inputs.frames"),
    "frame not a string": (with_inputs(frames=[7]), "inputs.frames[0]"),
    "frame not base64": (with_inputs(frames=["not base64!"]), "inputs.frames[0]"),
    "frame not an image": (with_inputs(frames=[b64(b"plain text, not an image")]), "inputs.frames[0]"),
    "frame in an unlisted format": (with_inputs(frames=[b64(b"GIF89a" + bytes(20))]), "inputs.frames[0]"),
    "both video and frames": (with_inputs(video=b64(b"x")), "inputs"),
    "neither video nor frames": ({"inputs": {"questions": [QUESTION]}}, "inputs"),
    "video not a string": ({"inputs": {"video": 3, "questions": [QUESTION]}}, "inputs.video"),
    "video not a video": ({"inputs": {"video": b64(b"\x00" * 4096), "questions": [QUESTION]}}, "inputs.video"),
    "unknown input": (with_inputs(vidoe="x"), "inputs.vidoe"),
    "inputs not an object": ({"inputs": "What happens?"}, "inputs"),
    "request not an object": (["What happens?"], "request"),
    # parameters
    "max_new_tokens 1e9": (with_parameters(max_new_tokens=1e9), "parameters.max_new_tokens"),
    "max_new_tokens past the cap": (
        with_parameters(max_new_tokens=endpoint.MAX_NEW_TOKENS + 1), "parameters.max_new_tokens"),
    "max_new_tokens zero": (with_parameters(max_new_tokens=0), "parameters.max_new_tokens"),
    "max_new_tokens boolean": (with_parameters(max_new_tokens=True), "parameters.max_new_tokens"),
    "max_new_tokens as a string": (with_parameters(max_new_tokens="5"), "parameters.max_new_tokens"),
    "min_new_tokens past max_new_tokens": (with_parameters(min_new_tokens=3), "parameters.min_new_tokens"),
    "NaN temperature": (with_parameters(temperature=NAN), "parameters.temperature"),
    "top_p past 1": (with_parameters(top_p=2.0), "parameters.top_p"),
    "do_sample not a boolean": (with_parameters(do_sample="yes"), "parameters.do_sample"),
    "negative suppressed id": (with_parameters(suppress_tokens=[-1]), "parameters.suppress_tokens[0]"),
    "unknown generate argument": (with_parameters(max_length=10**9), "parameters.max_length"),
    "parameters not an object": ({**frames_request(), "parameters": [1]}, "parameters"),
    "unknown top-level key": ({**frames_request(), "extra": 1}, "request.extra"),
}  # fmt: skip


@pytest.mark.parametrize("request_, field", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_are_refused_naming_the_field_before_the_model(refusing, request_, field):
    assert refusal(refusing, request_).field == field


@pytest.mark.parametrize(
    "limit, request_, field",
    [("MAX_QUESTIONS", lambda n: with_inputs(questions=[QUESTION] * (n + 1)), "inputs.questions"),
     ("MAX_QUESTION_CHARS", lambda n: with_inputs(questions=["x" * (n + 1)]), "inputs.questions[0]"),
     ("MAX_FRAMES", lambda n: with_inputs(frames=["AAAA"] * (n + 1)), "inputs.frames")],
    ids=["questions", "question length", "frames"],
)  # fmt: skip
def test_counts_past_their_limits_are_refused(refusing, limit, request_, field):
    assert refusal(refusing, request_(getattr(endpoint, limit))).field == field


def test_limits_are_documented_constants():
    for name in ("MAX_PAYLOAD_BYTES", "MAX_FRAMES", "MAX_FRAME_PIXELS", "MAX_QUESTIONS", "MAX_QUESTION_CHARS",
                 "MAX_NEW_TOKENS", "MAX_FPS"):  # fmt: skip
        value = getattr(endpoint, name)
        assert isinstance(value, (int, float)) and value > 0, name
        assert name in endpoint.__doc__, f"the handler's docstring does not document {name}"


class PeakMemory:
    """Peak resident memory growth of this process over a block (Linux: resets VmHWM via clear_refs)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
        self.start = self._kib("VmRSS")
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self.growth_mb = (self._kib("VmHWM") - self.start) / 1024

    @staticmethod
    def _kib(name: str) -> int:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(name))
        return int(line.split()[1])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's own check warns, and opens it
def test_a_decompression_bomb_is_refused_from_its_header(refusing):
    """Two 169-megapixel PNGs in 1.3 MB of base64: refused before decoding, in milliseconds and a few MB."""
    bomb = b64(png_bomb(BOMB_SIDE, BOMB_SIDE))
    request = with_inputs(frames=[bomb, bomb])
    assert len(bomb) * 2 < 1.5e6
    with PeakMemory() as peak:
        error = refusal(refusing, request)
    assert error.field == "inputs.frames[0]" and error.status == 413
    assert "pixels" in str(error)
    print(f"169-megapixel PNG pair refused in {peak.seconds * 1000:.1f} ms, peak RSS +{peak.growth_mb:.1f} MB")
    assert peak.seconds < 2.0 and peak.growth_mb < 100


def test_a_frame_just_past_the_pixel_limit_is_refused(refusing, monkeypatch):
    monkeypatch.setattr(endpoint, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    assert refusal(refusing, frames_request()).field == "inputs.frames[0]"


def test_an_oversized_payload_is_refused_before_it_is_decoded(refusing):
    request = with_inputs(frames=["A" * 50_000_000])  # 50 MB of base64
    with PeakMemory() as peak:
        error = refusal(refusing, request)
    assert error.field == "request" and error.status == 413
    print(f"50 MB payload refused in {peak.seconds * 1000:.1f} ms, peak RSS +{peak.growth_mb:.1f} MB")
    assert peak.seconds < 1.0 and peak.growth_mb < 20


def test_a_billion_new_tokens_is_refused_at_once(refusing):
    started = time.perf_counter()
    error = refusal(refusing, with_parameters(max_new_tokens=10**9))
    assert error.field == "parameters.max_new_tokens" and str(endpoint.MAX_NEW_TOKENS) in str(error)
    assert time.perf_counter() - started < 1.0


# -- video --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    path = write_synthetic_video(tmp_path_factory.mktemp("video") / "video.mp4", num_frames=30, fps=10.0)  # 3 s
    return b64(Path(path).read_bytes())


def test_a_video_longer_than_the_frame_limit_is_refused_before_decoding(refusing, video, monkeypatch):
    monkeypatch.setattr(endpoint, "MAX_FRAMES", 3)  # 3 s at 2 fps is 6 frames
    request = {"inputs": {"video": video, "fps": 2.0, "questions": [QUESTION]}, "parameters": GENERATE}
    error = refusal(refusing, request)
    assert error.field == "inputs.video" and "6 frames" in str(error)


def test_a_video_with_frames_past_the_pixel_limit_is_refused_before_decoding(refusing, video, monkeypatch):
    monkeypatch.setattr(endpoint, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    request = {"inputs": {"video": video, "questions": [QUESTION]}, "parameters": GENERATE}
    assert refusal(refusing, request).field == "inputs.video"


def test_a_video_is_answered(serving, video):
    request = {"inputs": {"video": video, "fps": 2.0, "questions": [QUESTION, {"question": QUESTION, "time": 1.0}]},
               "parameters": GENERATE}  # fmt: skip
    answers = serving(request)
    assert [(a["time"], a["frames_seen"]) for a in answers] == [(None, 6), (1.0, 3)]


# -- accepted requests ---------------------------------------------------------------------------------------------


def test_frames_are_decoded_one_at_a_time_and_encoded_a_few_at_a_time(serving, monkeypatch):
    """20 frames: at most one decoded image alive at a time, and at most `ENCODE_BATCH` encoded in one call."""
    alive: list[weakref.ref] = []
    convert = Image.Image.convert

    def tracked_convert(self, *args, **kwargs):
        image = convert(self, *args, **kwargs)
        alive.append(weakref.ref(image))
        return image

    batches, peaks = [], []
    get_frame_features = serving.model.model.get_frame_features

    def tracked_features(pixels):
        batches.append(pixels.shape[1])
        peaks.append(sum(ref() is not None for ref in alive))
        return get_frame_features(pixels)

    monkeypatch.setattr(Image.Image, "convert", tracked_convert)
    monkeypatch.setattr(serving.model.model, "get_frame_features", tracked_features)
    answers = serving(frames_request(20, questions=[{"question": QUESTION, "time": 4.0}, QUESTION]))
    assert [a["frames_seen"] for a in answers] == [5, 20]
    assert sum(batches) == 20 and max(batches) <= endpoint.ENCODE_BATCH < 20
    assert max(peaks) <= 1  # the frame being preprocessed at most: none waits for the encoder as an image


def test_limits_accept_what_they_allow(serving):
    questions = [{"question": "x" * endpoint.MAX_QUESTION_CHARS, "time": 0}] + [QUESTION] * (endpoint.MAX_QUESTIONS - 1)
    request = frames_request(2, questions=questions, fps=endpoint.MAX_FPS)
    request["parameters"] = {
        "max_new_tokens": 1, "min_new_tokens": 1, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "do_sample": True,
        "repetition_penalty": 1.1, "suppress_tokens": [5, 6],
    }  # fmt: skip
    answers = serving(request)
    assert len(answers) == endpoint.MAX_QUESTIONS and answers[0]["frames_seen"] == 1
    assert answers[0]["time"] == 0.0 and math.isfinite(answers[0]["time"])
