"""The HTTP API's request bodies, with the endpoint handler's limits (conversion/handler.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..conversion.handler import MAX_FPS, MAX_NEW_TOKENS, MAX_QUESTION_CHARS
from .streams import STREAM_ID

MAX_PUSHED_FRAMES = 64  # frames in one push request
MAX_SPEED = 1000.0
MAX_MESSAGES = 64


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateStream(Strict):
    """`source`: a path under the operator's media root, or a URL; none for a push-mode stream."""

    source: str | None = Field(None, min_length=1, max_length=2048)
    stream_id: str | None = Field(None, pattern=STREAM_ID.pattern)
    fps: float = Field(1.0, gt=0, le=MAX_FPS)
    speed: float | None = Field(None, gt=0, le=MAX_SPEED, description="play a file as if live, at this speed")
    memory_seed: int | None = Field(None, ge=0, lt=2**63)

    @property
    def kind(self) -> str:
        return "push" if self.source is None else ("url" if "://" in self.source else "file")


def _question(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


class Ask(Strict):
    question: str = Field(..., min_length=1, max_length=MAX_QUESTION_CHARS)
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    at: float | None = Field(None, ge=0, description="answer as of this stream time (seconds); waits for it")

    _blank = field_validator("question")(_question)


class PushedFrame(Strict):
    image: str = Field(..., min_length=1, description="base64 PNG, JPEG, WEBP or BMP")
    timestamp: float = Field(..., ge=0, allow_inf_nan=False)


class PushFrames(Strict):
    frames: list[PushedFrame] = Field(..., min_length=1, max_length=MAX_PUSHED_FRAMES)


class TextPart(Strict):
    type: Literal["text"]
    text: str = Field(..., max_length=MAX_QUESTION_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send `name` and the like
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart] = Field(..., description="text only: the video is the stream's memory")


class ChatCompletion(BaseModel):
    """OpenAI's chat completion request, with `stream_id` (`extra_body` in the `openai` client)."""

    model_config = ConfigDict(extra="ignore")  # OpenAI options this server does not use (user, seed, ...)
    model: str = Field(..., max_length=256)
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    stream_id: str = Field(..., pattern=STREAM_ID.pattern)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(None, ge=0, le=0, description="answers are greedy: 0 or absent")
    n: int | None = Field(None, ge=1, le=1)

    @field_validator("messages")
    @classmethod
    def _ends_with_a_question(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user" or not _text(messages[-1].content).strip():
            raise ValueError("the last message must be a non-blank user message (the question)")
        return messages

    def conversation(self) -> list[dict]:
        """The messages in the processor's chat format, the stream's memory at the start of the first user turn."""
        conversation, video_placed = [], False
        for message in self.messages:
            content = [{"type": "text", "text": _text(message.content)}]
            if message.role == "user" and not video_placed:
                content.insert(0, {"type": "video"})
                video_placed = True
            conversation.append({"role": message.role, "content": content})
        return conversation

    @property
    def new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _text(content: str | list[TextPart]) -> str:
    return content if isinstance(content, str) else " ".join(part.text for part in content)
