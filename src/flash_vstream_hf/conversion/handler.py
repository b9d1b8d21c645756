"""Hugging Face Inference Endpoints handler for Flash-VStream (a custom `handler.py`).

Copied into exported Hub repos by `flash-vstream export-hub`, for both model families (v1, and v2 on Qwen2-VL); it
needs only transformers (the model and processor come from the repo's remote code), PIL, PyAV for video files, and
the `video_io.py` and `demuxers.py` shipped beside it. Not imported by the flash_vstream_hf package. What it asks
of the model is the streaming interface both families share (`get_frame_features`, `update_memory_from_features`,
`generate(video_memory=...)`, the processor's `preprocess_frames` and `num_video_tokens=`; see families.py).

Request (JSON):

    {"inputs": {"video": "<base64-encoded video file>",          # or
                "frames": ["<base64-encoded image>", ...],        # PNG, JPEG, WebP or BMP frames sampled at `fps`
                "fps": 1.0,                                       # sampling rate (default 1)
                "questions": ["What happens?", {"question": "What did she pick up?", "time": 42.0}]},
     "parameters": {"max_new_tokens": 128}}                       # see GENERATION_PARAMETERS

Response: one entry per question, in request order:

    [{"question": "...", "time": 42.0, "frames_seen": 43, "answer": "..."}, ...]

A question with a `time` (seconds from the start) is answered from the frames up to that moment, as if asked
live during the stream; a question without one is answered after the whole video. Frames are added to the
memory in one step per question time, so on v1 questions without times see the original's offline STAR memory.

Every request is checked once, at the boundary, before anything reaches the model: the type and range of every
field, and these limits:

- MAX_PAYLOAD_BYTES: the request's size (base64 strings, questions, parameters), checked before anything is decoded;
- MAX_FRAMES: frames given, or sampled from the video at `fps` (from its duration, before decoding);
- MAX_FRAME_PIXELS: width x height of a frame, read from the image or video header before decoding;
- MAX_QUESTIONS and MAX_QUESTION_CHARS: the number and length of the questions;
- MAX_NEW_TOKENS: the cap on `parameters.max_new_tokens` (an integer);
- MAX_FPS: the largest `fps` (a finite number > 0).

A refused request raises `PayloadError` (a `ValueError`) whose message starts with the field at fault, e.g.
`inputs.questions[1].time: must be a number >= 0 (seconds), got -1`; Inference Endpoints return it as an HTTP 400
error (`error.status` says which 4xx the request deserves). Frames are decoded one at a time and encoded
`ENCODE_BATCH` at a time; only their pooled features wait for the next question time. A frame whose header is
valid but whose data is damaged, or a video that holds more frames than its header said, is refused when it is
decoded, after the frames before it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModelForImageTextToText, AutoProcessor

try:  # in the package
    from ..processing import video_io
    from ..processing.demuxers import demuxer_whitelist, refuse_every_input
except ImportError:  # handler.py at the root of an exported repository, beside the processing sources
    import video_io
    from demuxers import demuxer_whitelist, refuse_every_input

# -- limits (see the module docstring) ------------------------------------------------------------------------------
MAX_PAYLOAD_BYTES = 32 * 2**20  # ~24 MB of files once base64-decoded; longer videos: send frames sampled at 1 fps
MAX_FRAMES = 1800  # 30 minutes at 1 fps; their pooled features wait for a question time (~128 KB each for 7B)
MAX_FRAME_PIXELS = 4096 * 4096  # 16.8 MP, above 4K UHD; frames are resized to the vision tower's size anyway
MAX_QUESTIONS = 16
MAX_QUESTION_CHARS = 2000  # characters of one question
MAX_NEW_TOKENS = 512  # per question: bounds the time one request can hold the GPU (MAX_QUESTIONS x this)
MAX_FPS = 30.0
MAX_SUPPRESSED_TOKENS = 65536  # ids in `parameters.suppress_tokens`
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # what PIL may open frames as: no other decoder is exposed

DEFAULT_FPS = 1.0
DEFAULT_MAX_NEW_TOKENS = 128
ENCODE_BATCH = 8  # frames through the vision tower at a time; only their pooled features are kept
_TIME_EPSILON = 1e-6  # seconds; a frame at exactly a question's time is part of its answer

REQUEST_FIELDS = ("inputs", "parameters")
INPUT_FIELDS = ("video", "frames", "fps", "questions")
QUESTION_FIELDS = ("question", "time")


class PayloadError(ValueError):
    """A request the handler refuses, before it reaches the model.

    Attributes:
        field: where the fault is, e.g. `inputs.questions[2].time` (`request` for the body as a whole).
        status: the HTTP status it deserves: 413 for a size limit, 400 otherwise.
    """

    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


@dataclass(frozen=True)
class Question:
    text: str
    time: float  # seconds from the start; math.inf: after the whole video


@dataclass(frozen=True)
class Request:
    """A checked request: `frames` (image files) or `video` (a video file), never both."""

    questions: list[Question]
    fps: float
    frames: list[bytes] | None
    video: bytes | None
    generation: dict[str, Any]


class EndpointHandler:
    """What Inference Endpoints call: `EndpointHandler(repo_folder)(request_body) -> answers` (see the module
    docstring for the request, the response and the limits)."""

    def __init__(self, path: str = ""):
        # PIL's own decompression-bomb check, for any image PIL opens in this (endpoint) process; the handler
        # checks each frame's size itself before decoding it
        Image.MAX_IMAGE_PIXELS = MAX_FRAME_PIXELS
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(
            path, trust_remote_code=True, dtype="auto", device_map="auto" if torch.cuda.is_available() else None
        )
        self._setup(model, processor)

    @classmethod
    def from_model(cls, model, processor) -> EndpointHandler:
        """A handler around a loaded model and processor (what `EndpointHandler(path)` loads)."""
        handler = cls.__new__(cls)
        handler._setup(model, processor)
        return handler

    def _setup(self, model, processor) -> None:
        self.model, self.processor = model.eval(), processor
        # the decoder this handler ships with (export-hub copies video_io.py beside it for either family)
        self.video_io = video_io

    def __call__(self, data: Any) -> list[dict[str, Any]]:
        """Answer every question of a request body; a `PayloadError` (HTTP 4xx) when the body is refused."""
        request = parse_request(data)  # raises PayloadError before anything reaches the model
        order = sorted(range(len(request.questions)), key=lambda i: request.questions[i].time)
        answers: list[dict[str, Any]] = [{}] * len(request.questions)
        memory = None
        with self._frames(request) as frames, torch.inference_mode():
            upcoming = _Lookahead(frames)
            for index in order:
                question = request.questions[index]
                # every frame up to the question's time joins the memory before it is answered
                features = self._encode_until(upcoming, question.time)
                if features is not None:
                    memory = self.model.update_memory_from_features(features, memory)
                answers[index] = {
                    "question": question.text,
                    "time": None if math.isinf(question.time) else question.time,
                    "frames_seen": memory.frames_seen if memory is not None else 0,
                    "answer": self._answer(question.text, memory, request.generation),
                }
        return answers

    # -- frames -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _frames(self, request: Request) -> Iterator[Iterator[tuple[float, Any]]]:
        """`(timestamp, [H, W, 3] uint8 array or PIL image)` in time order, decoded one at a time."""
        if request.frames is not None:
            yield (
                (i / request.fps, decode_image(data, f"inputs.frames[{i}]")) for i, data in enumerate(request.frames)
            )
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "video")
            with open(path, "wb") as handle:
                handle.write(request.video)
            yield self._video_frames(path, request.fps)

    def _video_frames(self, path: str, fps: float) -> Iterator[tuple[float, Any]]:
        """The sampled frames of a video, refused past the limits its header did not reveal."""
        try:
            for count, frame in enumerate(self.video_io.iter_video_frames(path, fps=fps), start=1):
                height, width = frame.image.shape[:2]
                if count > MAX_FRAMES:
                    raise PayloadError("inputs.video", f"holds more than {MAX_FRAMES} frames at {fps:g} fps", 413)
                _check_pixels(width, height, "inputs.video")
                yield frame.timestamp, frame.image
                del frame  # no reference to a used frame while the next one is decoded
        except ValueError as error:
            if isinstance(error, PayloadError):
                raise
            raise PayloadError("inputs.video", f"cannot be decoded ({error})") from error

    def _encode_until(self, frames: _Lookahead, time: float):
        """The frame features of the frames up to `time` (see `concat_frame_features`), or None when there is
        none."""
        pixels, features = [], []
        for image in frames.take_while(lambda timestamp: timestamp <= time + _TIME_EPSILON):
            # one frame at a time through the processor, so no decoded frame outlives its preprocessing
            pixels.append(self.processor.preprocess_frames([image], return_tensors="pt"))
            del image
            if len(pixels) == ENCODE_BATCH:
                features.append(self._encode(pixels))
                pixels = []
        if pixels:
            features.append(self._encode(pixels))
        return concat_frame_features(features) if features else None

    def _encode(self, pixels: list[torch.Tensor]):
        """Preprocessed frames -> the model's frame features (the vision tower's part of the frame handler)."""
        return self.model.get_frame_features(torch.cat(pixels)[None])

    # -- answers ------------------------------------------------------------------------------------------------

    def _answer(self, question: str, memory, generation: dict[str, Any]) -> str:
        conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        tokens = memory.get_seq_length() if memory is not None else 0
        inputs = self.processor(text=prompt, num_video_tokens=tokens, return_tensors="pt").to(self.model.device)
        kwargs = {"video_memory": memory.snapshot()} if memory is not None else {}
        output = self.model.generate(**inputs, **kwargs, **generation)
        return self.processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def concat_frame_features(parts: list):
    """Frame features of consecutive batches as one, along the frame axis: v1's are pooled features
    `[1, t, P_spa^2, D]`, v2's a `FlashVStreamQwen2VLFrameFeatures` (full and low resolution), which joins its own."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=1)
    return type(parts[0]).cat(parts)


class _Lookahead:
    """An iterator of `(timestamp, frame)` from which the frames up to a time can be taken, one at a time."""

    def __init__(self, frames: Iterator[tuple[float, Any]]):
        self._frames = frames
        self._next = next(frames, None)

    def take_while(self, accept: Callable[[float], bool]) -> Iterator[Any]:
        while self._next is not None and accept(self._next[0]):
            frame, self._next = self._next[1], None
            yield frame
            del frame  # no reference to a used frame while the next one is decoded
            self._next = next(self._frames, None)


# -- the request schema -------------------------------------------------------------------------------------------


def parse_request(data: Any) -> Request:
    """Check a request body against the schema and limits; a `PayloadError` names the first field at fault.

    Cheap checks come first (size, then types and ranges); frame and video headers are read last.
    """
    if not isinstance(data, dict):
        raise PayloadError("request", f"must be a JSON object, got {_kind(data)}")
    size = _payload_size(data, MAX_PAYLOAD_BYTES)
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadError("request", f"is larger than {MAX_PAYLOAD_BYTES:,} bytes", 413)
    if "inputs" in data:
        inputs = data["inputs"]
        _check_keys(data, REQUEST_FIELDS, "request")
    else:  # the body itself holds the inputs (and maybe the parameters)
        inputs = {k: v for k, v in data.items() if k != "parameters"}
    if not isinstance(inputs, dict):
        raise PayloadError(
            "inputs", f"must be an object with 'video' or 'frames', and 'questions'; got {_kind(inputs)}"
        )
    _check_keys(inputs, INPUT_FIELDS, "inputs")
    questions = parse_questions(inputs.get("questions"))
    fps = _real(inputs.get("fps", DEFAULT_FPS), "inputs.fps", 0.0, MAX_FPS, low_inclusive=False)
    generation = parse_generation(data.get("parameters"))
    if ("video" in inputs) == ("frames" in inputs):
        raise PayloadError("inputs", "needs either 'video' (a base64 video file) or 'frames' (base64 images), not both")
    if "frames" in inputs:
        return Request(questions, fps, _parse_frames(inputs["frames"]), None, generation)
    return Request(questions, fps, None, _parse_video(inputs["video"], fps), generation)


def parse_questions(value: Any) -> list[Question]:
    """`inputs.questions`: 1 to MAX_QUESTIONS strings or `{"question": str, "time": seconds}` objects."""
    field = "inputs.questions"
    if not isinstance(value, list):
        raise PayloadError(field, f"must be a list of questions, got {_kind(value)}")
    if not 1 <= len(value) <= MAX_QUESTIONS:
        raise PayloadError(field, f"must list 1 to {MAX_QUESTIONS} questions, got {len(value)}")
    return [parse_question(item, f"{field}[{i}]") for i, item in enumerate(value)]


def parse_question(item: Any, field: str = "question") -> Question:
    """One question: a string (asked after the whole video), or `{"question": str, "time": seconds >= 0}`."""
    if isinstance(item, dict):
        _check_keys(item, QUESTION_FIELDS, field)
        time = item.get("time")
        seconds = math.inf if time is None else _real(time, f"{field}.time", 0.0, math.inf, unit=" (seconds)")
        return Question(_question_text(item.get("question"), f"{field}.question"), seconds)
    if isinstance(item, str):
        return Question(_question_text(item, field), math.inf)
    raise PayloadError(field, f"must be a string or {{'question': str, 'time': seconds}}, got {_kind(item)}")


def _question_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(field, f"must be a string, got {_kind(value)}")
    if not value.strip():
        raise PayloadError(field, "must not be empty")
    if len(value) > MAX_QUESTION_CHARS:
        raise PayloadError(field, f"is {len(value):,} characters long; at most {MAX_QUESTION_CHARS:,}", 413)
    return value


def _integer(low: int, high: int) -> Callable[[Any, str], int]:
    def check(value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PayloadError(field, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    return check


def _number(low: float, high: float, low_inclusive: bool = True) -> Callable[[Any, str], float]:
    return lambda value, field: _real(value, field, low, high, low_inclusive)


def _boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise PayloadError(field, f"must be true or false, got {value!r}")
    return value


def _token_ids(value: Any, field: str) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_SUPPRESSED_TOKENS:
        raise PayloadError(field, f"must be a list of at most {MAX_SUPPRESSED_TOKENS} token ids")
    check = _integer(0, 2**31 - 1)
    return [check(token, f"{field}[{i}]") for i, token in enumerate(value)]


# What `parameters` may hold, passed on to generate(): each name with its check. Anything else (max_length,
# num_return_sequences, streamer, ...) is refused, so no request escapes the MAX_NEW_TOKENS cap.
GENERATION_PARAMETERS: dict[str, Callable[[Any, str], Any]] = {
    "max_new_tokens": _integer(1, MAX_NEW_TOKENS),
    "min_new_tokens": _integer(0, MAX_NEW_TOKENS),
    "do_sample": _boolean,
    "temperature": _number(0.0, 100.0, low_inclusive=False),
    "top_p": _number(0.0, 1.0, low_inclusive=False),
    "top_k": _integer(0, 2**31 - 1),
    "repetition_penalty": _number(0.0, 100.0, low_inclusive=False),
    "suppress_tokens": _token_ids,
}


def parse_generation(value: Any) -> dict[str, Any]:
    """`parameters`: generate() arguments from GENERATION_PARAMETERS, `max_new_tokens` defaulting to
    DEFAULT_MAX_NEW_TOKENS."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise PayloadError("parameters", f"must be an object of generate() arguments, got {_kind(value)}")
    _check_keys(value, tuple(GENERATION_PARAMETERS), "parameters")
    # the cap is read at call time, so the checks follow MAX_NEW_TOKENS when it is changed
    checks = {**GENERATION_PARAMETERS, "max_new_tokens": _integer(1, MAX_NEW_TOKENS)}
    generation = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS}
    generation.update({name: checks[name](item, f"parameters.{name}") for name, item in value.items()})
    if generation.get("min_new_tokens", 0) > generation["max_new_tokens"]:
        raise PayloadError(
            "parameters.min_new_tokens", f"must be at most max_new_tokens ({generation['max_new_tokens']})"
        )
    return generation


def _parse_frames(value: Any) -> list[bytes]:
    """`inputs.frames`: 1 to MAX_FRAMES base64 images; each header is read (not the pixels) to check its size."""
    if not isinstance(value, list):
        raise PayloadError("inputs.frames", f"must be a list of base64 images, got {_kind(value)}")
    if not value:
        raise PayloadError("inputs.frames", "must hold at least one frame")
    if len(value) > MAX_FRAMES:
        raise PayloadError("inputs.frames", f"holds {len(value)} frames; at most {MAX_FRAMES}", 413)
    files = []
    for i, item in enumerate(value):
        data = _base64(item, f"inputs.frames[{i}]")
        _open_image(data, f"inputs.frames[{i}]")  # the header only: PIL reads pixels lazily
        files.append(data)
    return files


def _parse_video(value: Any, fps: float) -> bytes:
    """`inputs.video`: a base64 video file whose size and length (from its header) are within the limits."""
    data = _base64(value, "inputs.video")
    width, height, duration = _probe_video(data)
    _check_pixels(width, height, "inputs.video")
    if duration is not None:
        frames = max(1, math.ceil(duration * fps - _TIME_EPSILON))
        if frames > MAX_FRAMES:
            raise PayloadError(
                "inputs.video", f"lasts {duration:.1f} s: {frames} frames at {fps:g} fps; at most {MAX_FRAMES}", 413
            )
    return data


def _probe_video(data: bytes) -> tuple[int, int, float | None]:
    """Width, height and duration (seconds, None when unknown) of the first video stream, from the headers."""
    import av

    # nothing in the payload may make FFmpeg open a second input (a playlist entry, RTP sockets: demuxers.py)
    options = {"format_whitelist": demuxer_whitelist(playlists=False)}
    try:
        with av.open(io.BytesIO(data), options=options, io_open=refuse_every_input) as container:
            if not container.streams.video:
                raise PayloadError("inputs.video", "holds no video stream")
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = container.duration / av.time_base if container.duration else None
            return stream.codec_context.width, stream.codec_context.height, duration
    except (av.error.FFmpegError, OSError, ValueError) as error:
        if isinstance(error, PayloadError):
            raise
        raise PayloadError("inputs.video", f"is not a readable video file ({error})") from error


def _open_image(data: bytes, field: str) -> Image.Image:
    """The image of `data`, opened lazily (header only) and refused past MAX_FRAME_PIXELS."""
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:  # the warning, when raised
        raise PayloadError(field, f"is too large to decode ({error})", 413) from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise PayloadError(field, f"is not a {', '.join(IMAGE_FORMATS)} image ({error})") from error
    _check_pixels(*image.size, field)
    return image


def decode_image(data: bytes, field: str) -> Image.Image:
    """The RGB pixels of an image whose header `_parse_frames` checked."""
    image = _open_image(data, field)
    try:
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as error:
        raise PayloadError(field, f"cannot be decoded ({error})") from error


def _check_pixels(width: int, height: int, field: str) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise PayloadError(
            field, f"is {width}x{height} = {width * height:,} pixels; at most {MAX_FRAME_PIXELS:,} per frame", 413
        )


def _base64(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise PayloadError(field, f"must be a non-empty base64 string, got {_kind(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise PayloadError(field, f"is not valid base64 ({error})") from error


def _real(value: Any, field: str, low: float, high: float, low_inclusive: bool = True, unit: str = "") -> float:
    """A JSON number (not a boolean, not a string) in `[low, high]` (`(low, high]` unless `low_inclusive`)."""
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer too large for a float
            number = float(value)
    above_low = number >= low if low_inclusive else number > low
    if not (math.isfinite(number) and above_low and number <= high):
        bound = f">= {low:g}" if low_inclusive else f"> {low:g}"
        limit = "" if math.isinf(high) else f" and <= {high:g}"
        raise PayloadError(field, f"must be a finite number {bound}{limit}{unit}, got {value!r}")
    return number


def _check_keys(value: dict, known: tuple[str, ...], field: str) -> None:
    unknown = [key for key in value if key not in known]
    if unknown:
        raise PayloadError(f"{field}.{unknown[0]}", f"is not a known field (expected one of {', '.join(known)})")


def _payload_size(value: Any, limit: int) -> int:
    """Bytes of strings plus one per other item in `value`, counted until they pass `limit` (then returned)."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        total += len(item) if isinstance(item, (str, bytes, dict, list, tuple)) else 1
        if total > limit:
            break  # before copying a huge list onto the stack
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def _kind(value: Any) -> str:
    """How a value reads in an error message: its JSON type, and the value when it is short."""
    names = {str: "string", bool: "boolean", int: "number", float: "number", list: "list", dict: "object"}
    kind = names.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text}" if len(text) <= 40 else kind
