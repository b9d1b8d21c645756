"""`FlashVStreamProcessor`: Llama tokenizer + CLIP frame preprocessing + the vicuna_v1 chat template.

Remote-code friendly: it imports only transformers, numpy, PIL and `video_io` from its own folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .video_io import iter_video_frames

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# vicuna_v1 (spec §5.1): "{system} USER: <video>\n{question} ASSISTANT: {answer}</s>USER: ... ASSISTANT:".
# A system message replaces the default system prompt; a video item renders as "<video>\n".
VICUNA_V1_CHAT_TEMPLATE = (
    '{%- set system = "' + SYSTEM_PROMPT + '" -%}'
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set system = messages[0]['content'] -%}"
    "{%- else -%}{%- set system = messages[0]['content'] | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join(' ') -%}{%- endif -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{{- system + ' ' -}}"
    "{%- for message in messages -%}"
    "{{- 'USER: ' if message['role'] == 'user' else 'ASSISTANT: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{- '<video>\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- ' ' if message['role'] == 'user' else '</s>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

_FRAME_BATCH = 16  # frames preprocessed per image-processor call


class FlashVStreamProcessor(ProcessorMixin):
    r"""
    Turns text and videos into model inputs. `<video>` in the text is expanded to as many placeholder tokens as
    the STAR memory gives for the video's frames (or `num_video_tokens` for a memory that already exists).

    Text is tokenised in chunks around the placeholder, as the original `tokenizer_image_token` does: BOS once,
    and the text after the placeholder tokenised on its own (spec §5.2).

    Args:
        image_processor: a CLIP image processor, applied to every frame.
        tokenizer: the Llama tokenizer, with `<video>` as a special token.
        chat_template: Jinja template; defaults to vicuna_v1.
        video_token: the placeholder string.
        fps: frames per second sampled from video files (by timestamp).
        video_backend: `"decord"`, `"pyav"` or `None` for the first installed.
        spatial_pool_size, temporal_pool_size, abstract_pool_size, spatial_length, temporal_length,
        abstract_length, retrieved_length: the model's STAR memory fields, for the token count.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        video_token: str = "<video>",
        fps: float = 1.0,
        video_backend: str | None = None,
        spatial_pool_size: int = 8,
        temporal_pool_size: int = 4,
        abstract_pool_size: int = 1,
        spatial_length: int = 1,
        temporal_length: int = 25,
        abstract_length: int = 25,
        retrieved_length: int = 3,
        **kwargs,
    ):
        self.video_token = video_token
        self.fps = fps
        self.video_backend = video_backend
        self.spatial_pool_size = spatial_pool_size
        self.temporal_pool_size = temporal_pool_size
        self.abstract_pool_size = abstract_pool_size
        self.spatial_length = spatial_length
        self.temporal_length = temporal_length
        self.abstract_length = abstract_length
        self.retrieved_length = retrieved_length
        super().__init__(image_processor, tokenizer, chat_template=chat_template or VICUNA_V1_CHAT_TEMPLATE, **kwargs)
        self.video_token_id = self.tokenizer.convert_tokens_to_ids(video_token)
        if self.video_token_id is None or self.video_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no token {video_token!r}; add it as a special token")

    @classmethod
    def from_model_config(cls, config, image_processor, tokenizer, **kwargs) -> FlashVStreamProcessor:
        """A processor whose token counts follow `config` (a `FlashVStreamConfig`)."""
        fields = (
            "spatial_pool_size", "temporal_pool_size", "abstract_pool_size", "spatial_length",
            "temporal_length", "abstract_length", "retrieved_length",
        )  # fmt: skip
        return cls(image_processor, tokenizer, **{name: getattr(config, name) for name in fields}, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos"]

    def num_video_tokens(self, num_frames: int) -> int:
        """Memory tokens after `num_frames` frames, `[abstract | temporal | retrieved | current]` (spec §2.6)."""
        current = min(num_frames, self.spatial_length)
        past = num_frames - current
        temporal = min(past, self.temporal_length)
        return (
            min(past, self.abstract_length) * self.abstract_pool_size**2
            + temporal * self.temporal_pool_size**2
            + (min(self.retrieved_length, temporal) + current) * self.spatial_pool_size**2
        )

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos=None,
        num_video_tokens: int | None = None,
        fps: float | None = None,
        video_backend: str | None = None,
        return_tensors: str | None = None,
        padding: bool | str = True,
        add_special_tokens: bool = True,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            text: one prompt or a batch, each with at most one `<video>` placeholder.
            videos: one video or one per prompt. A video is a file path, a `[T, H, W, 3]` array, or a list of
                frames (PIL images or `[H, W, 3]` arrays); arrays and frame lists are taken as already sampled.
            num_video_tokens: placeholder tokens for a memory that already exists (`memory.get_seq_length()`),
                when no `videos` are given.
            fps: sampling rate for video files (default: the processor's `fps`).
        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` and, with videos, `pixel_values_videos`
            `[B, T, 3, H, W]`.
        """
        kwargs.pop("do_sample_frames", None)  # set by apply_chat_template when fps is given; sampling is always on
        if kwargs.pop("images", None) is not None or kwargs.pop("audio", None) is not None:
            raise ValueError("Flash-VStream takes videos only; pass a still image as a one-frame video")
        if kwargs:
            raise TypeError(f"unexpected arguments to FlashVStreamProcessor: {sorted(kwargs)}")
        if text is None:
            raise ValueError("text is required; put a <video> placeholder where the video goes")
        texts = [text] if isinstance(text, str) else list(text)
        if videos is not None and num_video_tokens is not None:
            raise ValueError("pass either videos or num_video_tokens, not both")
        if num_video_tokens is not None and num_video_tokens < 0:
            raise ValueError(f"num_video_tokens must be >= 0, got {num_video_tokens}")

        placeholders = [t.count(self.video_token) for t in texts]
        if any(n > 1 for n in placeholders):
            raise ValueError(f"each prompt may hold one {self.video_token} placeholder, got counts {placeholders}")
        data = {}
        token_counts = [num_video_tokens] * len(texts)
        if videos is not None:
            video_list = _as_video_list(videos)
            if len(video_list) != len(texts):
                raise ValueError(f"got {len(video_list)} videos for {len(texts)} prompts; give one video per prompt")
            missing = [i for i, n in enumerate(placeholders) if n == 0]
            if missing:
                raise ValueError(f"prompt {missing[0]} has no {self.video_token} placeholder for its video")
            pixels = [
                self._preprocess_video(video, fps or self.fps, video_backend or self.video_backend)
                for video in video_list
            ]
            lengths = {p.shape[0] for p in pixels}
            if len(lengths) > 1:
                raise ValueError(
                    f"videos in a batch must have the same number of frames, got {sorted(lengths)}; "
                    "process them one at a time"
                )
            data["pixel_values_videos"] = np.stack(pixels)
            token_counts = [self.num_video_tokens(p.shape[0]) for p in pixels]
        elif any(placeholders) and num_video_tokens is None:
            raise ValueError(
                f"the prompt holds {self.video_token} but neither videos nor num_video_tokens was given"
            )

        input_ids = [
            self._tokenize_with_placeholders(t, n or 0, add_special_tokens) for t, n in zip(texts, token_counts)
        ]
        encoded = self.tokenizer.pad({"input_ids": input_ids}, padding=padding, return_attention_mask=True)
        data.update(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _tokenize_with_placeholders(self, text: str, num_tokens: int, add_special_tokens: bool) -> list[int]:
        """`[BOS] + ids(before) + [video] * num_tokens + ids(after)`, `after` tokenised on its own."""
        before, found, after = text.partition(self.video_token)
        ids = self.tokenizer(before, add_special_tokens=add_special_tokens)["input_ids"]
        if found:
            ids = ids + [self.video_token_id] * num_tokens
            ids += self.tokenizer(after, add_special_tokens=False)["input_ids"]
        return ids

    def _preprocess_video(self, video, fps: float, backend: str | None) -> np.ndarray:
        """One video -> `[T, 3, H, W]` float32; files are decoded and preprocessed a few frames at a time."""
        if isinstance(video, (str, os.PathLike)):
            frames: Iterable = (frame.image for frame in iter_video_frames(video, fps=fps, backend=backend))
        else:
            frames = _as_frames(video)
        batches, batch = [], []
        for frame in frames:
            batch.append(frame)
            if len(batch) == _FRAME_BATCH:
                batches.append(self.image_processor(batch, return_tensors="np")["pixel_values"])
                batch = []
        if batch:
            batches.append(self.image_processor(batch, return_tensors="np")["pixel_values"])
        if not batches:
            raise ValueError("a video has zero frames")
        return np.concatenate(batches).astype(np.float32)


def _is_frame(item) -> bool:
    """A single image: PIL image or a 2-D/3-D array or tensor."""
    if hasattr(item, "getbands"):  # PIL.Image.Image without importing PIL
        return True
    return hasattr(item, "ndim") and item.ndim in (2, 3)


def _as_frames(video) -> list:
    """A video given as an array `[T, H, W, C]` or a list of frames -> list of frames."""
    if hasattr(video, "ndim"):
        if video.ndim != 4:
            raise ValueError(f"a video array must be [frames, height, width, channels], got shape {tuple(video.shape)}")
        return list(video.numpy() if hasattr(video, "numpy") else video)
    frames = list(video)
    if not all(_is_frame(f) for f in frames):
        raise ValueError("a video list must hold frames (PIL images or [height, width, channels] arrays)")
    return frames


def _as_video_list(videos) -> list:
    """Normalise the `videos` argument to one video per prompt."""
    if isinstance(videos, (str, os.PathLike)) or hasattr(videos, "ndim"):
        return [videos]
    if _is_frame(videos):
        return [[videos]]
    videos = list(videos)
    if not videos:
        raise ValueError("videos is empty")
    if all(_is_frame(v) for v in videos):  # one video given as a list of frames
        return [videos]
    normalised = []
    for video in videos:
        # apply_chat_template passes one list of videos per conversation
        if isinstance(video, (list, tuple)) and not all(_is_frame(f) for f in video):
            if len(video) != 1:
                raise ValueError(f"each prompt takes one video, got {len(video)}")
            video = video[0]
        normalised.append(video)
    return normalised


__all__ = ["FlashVStreamProcessor", "VICUNA_V1_CHAT_TEMPLATE", "SYSTEM_PROMPT"]
