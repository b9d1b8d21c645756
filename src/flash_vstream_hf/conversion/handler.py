"""Hugging Face Inference Endpoints handler for Flash-VStream (a custom `handler.py`).

Copied into exported Hub repos by `flash-vstream export-hub`; it needs only transformers (the model and processor
come from the repo's remote code) and PyAV for video files. Not imported by the flash_vstream_hf package.

Request (JSON):

    {"inputs": {"video": "<base64-encoded video file>",          # or
                "frames": ["<base64-encoded image>", ...],        # frames sampled at `fps`
                "fps": 1.0,                                       # sampling rate (default 1)
                "questions": ["What happens?", {"question": "What did she pick up?", "time": 42.0}]},
     "parameters": {"max_new_tokens": 128}}                       # any generate() argument

Response: one entry per question, in request order:

    [{"question": "...", "time": 42.0, "frames_seen": 43, "answer": "..."}, ...]

A question with a `time` (seconds from the start) is answered from the frames up to that moment, as if asked
live during the stream; a question without one is answered after the whole video. Frames are added to the
STAR memory in one step per question time, so questions without times see the original's offline memory.
"""

from __future__ import annotations

import base64
import importlib
import io
import math
import os
import tempfile
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

ENCODE_BATCH = 32  # frames through the vision tower at a time; only pooled features are kept
DEFAULT_MAX_NEW_TOKENS = 128


class EndpointHandler:
    def __init__(self, path: str = ""):
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        self.model = AutoModelForImageTextToText.from_pretrained(
            path, trust_remote_code=True, dtype="auto", device_map="auto" if torch.cuda.is_available() else None
        ).eval()
        # video_io ships next to the processor's remote code
        package = type(self.processor).__module__.rpartition(".")[0]
        self.video_io = importlib.import_module(f"{package}.video_io" if package else "video_io")

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        inputs = data.get("inputs", data)
        if not isinstance(inputs, dict):
            raise TypeError("'inputs' must be an object with 'video' or 'frames', and 'questions'")
        questions = [_parse_question(q) for q in inputs.get("questions") or []]
        if not questions:
            raise ValueError("'inputs.questions' must list at least one question")
        fps = float(inputs.get("fps", 1.0))
        parameters = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, **(data.get("parameters") or {})}

        order = sorted(range(len(questions)), key=lambda i: questions[i]["time"])
        answers: list[dict[str, Any]] = [{}] * len(questions)
        frames = self._frames(inputs, fps)
        next_frame = next(frames, None)
        memory, batch, features = None, [], []  # features: encoded frames [1, t, P_spa^2, D] not consolidated yet
        with torch.inference_mode():
            for index in order:
                question, time = questions[index]["question"], questions[index]["time"]
                # every frame up to the question's time joins the memory before it is answered
                while next_frame is not None and next_frame[0] <= time + 1e-6:
                    batch.append(next_frame[1])
                    if len(batch) == ENCODE_BATCH:
                        features.append(self._encode(batch))
                        batch = []
                    next_frame = next(frames, None)
                if batch:
                    features.append(self._encode(batch))
                    batch = []
                if features:
                    memory = self.model.update_memory_from_features(torch.cat(features, dim=1), memory)
                    features = []
                answers[index] = {
                    "question": question,
                    "time": None if math.isinf(time) else time,
                    "frames_seen": memory.frames_seen if memory is not None else 0,
                    "answer": self._answer(question, memory, parameters),
                }
        return answers

    # -- frames -------------------------------------------------------------------------------------------------

    def _frames(self, inputs: dict[str, Any], fps: float):
        """`(timestamp, [H, W, 3] uint8 array or PIL image)` in time order."""
        if inputs.get("video") is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "video")
                with open(path, "wb") as handle:
                    handle.write(base64.b64decode(inputs["video"]))
                for frame in self.video_io.iter_video_frames(path, fps=fps):
                    yield frame.timestamp, frame.image
        elif inputs.get("frames") is not None:
            for i, encoded in enumerate(inputs["frames"]):
                yield i / fps, Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")
        else:
            raise ValueError("'inputs' needs 'video' (base64 video file) or 'frames' (base64 images)")

    def _encode(self, frames: list) -> torch.Tensor:
        """Frames -> pooled vision features `[1, t, P_spa^2, D]` (the vision tower's part of the frame handler)."""
        pixels = self.processor.image_processor(frames, return_tensors="pt")["pixel_values"]
        return self.model.model.get_frame_features(pixels[None])

    # -- answers ------------------------------------------------------------------------------------------------

    def _answer(self, question: str, memory, parameters: dict[str, Any]) -> str:
        conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        tokens = memory.get_seq_length() if memory is not None else 0
        inputs = self.processor(text=prompt, num_video_tokens=tokens, return_tensors="pt").to(self.model.device)
        kwargs = {"video_memory": memory.snapshot()} if memory is not None else {}
        output = self.model.generate(**inputs, **kwargs, **parameters)
        return self.processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _parse_question(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        return {"question": item, "time": math.inf}
    if isinstance(item, dict) and isinstance(item.get("question"), str):
        time = item.get("time")
        return {"question": item["question"], "time": math.inf if time is None else float(time)}
    raise ValueError(f"a question must be a string or {{'question': str, 'time': seconds}}, got {item!r}")
