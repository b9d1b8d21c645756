"""`FlashVStreamProcessor`: Llama tokenizer + CLIP frame preprocessing + the vicuna_v1 chat template.

Remote-code friendly: it imports only transformers, numpy, PIL and `video_io` from its own folder.
"""

# No `from __future__ import annotations`: transformers reads the kwargs TypedDicts' annotations as classes.

import os
from collections.abc import Iterable
from typing import ClassVar, NamedTuple

import numpy as np
from transformers import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack, VideosKwargs

from .frames_flash_vstream import as_frames, is_frame
from .memory_tokens_flash_vstream import TokenLayout
from .video_io import evenly_spaced_indices, iter_video_frames

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# vicuna_v1 (docs/original_model.md, "Prompt"):
# "{system} USER: <video>\n{question} ASSISTANT: {answer}</s>USER: ... ASSISTANT:".
# A system message replaces the default system prompt; a video item renders as "<video>\n". The answer and its
# "</s>" are the `{% generation %}` block, the training target of `return_assistant_tokens_mask=True`.
VICUNA_V1_CHAT_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'video' -%}{{- '<video>\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    '{%- set system = "' + SYSTEM_PROMPT + '" -%}'
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set system = messages[0]['content'] -%}"
    "{%- else -%}{%- set system = messages[0]['content'] | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join(' ') -%}{%- endif -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{{- system + ' ' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' + render_content(message['content']) + ' ' -}}"
    "{%- else -%}{{- 'ASSISTANT: ' -}}"
    "{%- generation -%}{{- render_content(message['content']) + '</s>' -}}{%- endgeneration -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

_FRAME_BATCH = 16  # frames preprocessed per image-processor call
_PIXELS = "pixel_values"  # what the image processor returns
_LARGE_INTEGER = int(1e20)  # a tokenizer without a real model_max_length has one above this
# The text kwargs the chunk-wise tokenisation honours; any other TextKwargs key must be left unset.
_TEXT_KWARGS = {
    "add_special_tokens", "padding", "truncation", "max_length", "pad_to_multiple_of", "return_attention_mask",
    "padding_side", "return_offsets_mapping", "return_tensors", "verbose", "return_mm_token_type_ids",
    "return_text_replacement_offsets",
}  # fmt: skip
_SAMPLING_KWARGS = {"do_sample_frames", "fps", "num_frames", "video_backend", "return_tensors"}


class FlashVStreamVideosKwargs(VideosKwargs, total=False):
    """`VideosKwargs` plus the decoder: `video_backend` is `"decord"`, `"pyav"` or `None` (the first installed)."""

    video_backend: str | None


class FlashVStreamProcessorKwargs(ProcessingKwargs, total=False):
    videos_kwargs: FlashVStreamVideosKwargs


class _Sampling(NamedTuple):
    """How frames are taken from a video file: by timestamp at `fps` (all when `None`), or `num_frames`."""

    fps: float | None
    num_frames: int | None
    backend: str | None


class _Encoded(NamedTuple):
    """One tokenised prompt; `offsets` (with `return_offsets_mapping`) index the prompt with `<video>` expanded."""

    ids: list[int]
    offsets: list[tuple[int, int]] | None
    replacements: list[dict]  # transformers' text_replacement_offsets entries of this prompt


class FlashVStreamProcessor(ProcessorMixin):
    r"""
    Turns text and videos into model inputs. `<video>` in the text is expanded to as many placeholder tokens as
    the STAR memory gives for the video's frames (or `num_video_tokens` for a memory that already exists).

    Text is tokenised in chunks around the placeholder, as the original `tokenizer_image_token` does: BOS once,
    and the text after the placeholder tokenised on its own (docs/original_model.md, "Tokenisation").

    Args:
        image_processor: a CLIP image processor, applied to every frame.
        tokenizer: the Llama tokenizer, with `<video>` as a special token.
        chat_template: Jinja template; defaults to vicuna_v1.
        video_token: the placeholder string.
        fps: default frames per second sampled from video files (by timestamp).
        video_backend: default decoder, `"decord"`, `"pyav"` or `None` for the first installed.
        spatial_pool_size, temporal_pool_size, abstract_pool_size, spatial_length, temporal_length,
        abstract_length, retrieved_length: the model's STAR memory fields, for the token count.
    """

    valid_processor_kwargs = FlashVStreamProcessorKwargs
    text_kwargs: ClassVar[dict] = {
        "padding": True
    }  # batches are padded unless asked otherwise (lowest-priority default)

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
        # the model's STAR fields the token count needs (saved in processor_config.json; see `token_layout`)
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
    def from_model_config(cls, config, image_processor, tokenizer, **kwargs) -> "FlashVStreamProcessor":
        """A processor whose token counts follow `config` (a `FlashVStreamConfig`)."""
        return cls(image_processor, tokenizer, **TokenLayout.from_config(config).to_dict(), **kwargs)

    @property
    def token_layout(self) -> TokenLayout:
        """The fields the memory's token count depends on, as the one count definition takes them."""
        return TokenLayout.from_config(self)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos", "video_frame_mask"]

    def num_video_tokens(self, num_frames: int) -> int:
        """Memory tokens after `num_frames` frames, `[abstract | temporal | retrieved | current]`: the model's own
        count (`memory_tokens`, which `StarLayout.num_tokens` uses too)."""
        return self.token_layout.num_tokens(num_frames)

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos=None,
        num_video_tokens: int | None = None,
        **kwargs: Unpack[FlashVStreamProcessorKwargs],
    ) -> BatchFeature:
        """
        Args:
            text: one prompt or a batch, each with at most one `<video>` placeholder.
            videos: one video per prompt (`None` for a prompt without one), or one per placeholder. A video is a
                file path, a `file://` or `http(s)://` URL, a `[T, H, W, 3]` array, or a list of frames (PIL images
                or `[H, W, 3]` arrays); arrays and frame lists are taken as already sampled (only `num_frames`
                applies to them).
            num_video_tokens: placeholder tokens for a memory that already exists (`memory.get_seq_length()`),
                when no `videos` are given.
            **kwargs: the usual processor kwargs, flat or nested as `text_kwargs` / `videos_kwargs`. Video:
                `fps` (default: the processor's), `num_frames` (evenly spaced frames instead of by fps),
                `do_sample_frames=False` (every frame), `video_backend`, and the image processor's own options.
                Text: `padding`, `padding_side`, `max_length`, `truncation` (cuts text only: it raises rather than
                cut into the `<video>` placeholders), `pad_to_multiple_of`, `add_special_tokens`,
                `return_attention_mask`, `return_offsets_mapping`, `return_tensors`.
        Returns:
            `BatchFeature` with `input_ids` and `attention_mask` `[B, L]` and, with videos,
            `pixel_values_videos` `[B, T_max, 3, H, W]` float32 (shorter videos zero-padded at the end of the
            frame axis, all zeros for a prompt without a video) and `video_frame_mask` `[B, T_max]` int64
            (1 for a real frame). Each `<video>` expands to the token count of its own video's real frames.
        """
        texts = self._check_inputs(text, videos, num_video_tokens, kwargs)
        options = self._merge_kwargs(
            FlashVStreamProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs, videos_kwargs = options["text_kwargs"], options["videos_kwargs"]
        _refuse_unsupported("text", text_kwargs, _TEXT_KWARGS)
        _refuse_unsupported("video", videos_kwargs, _SAMPLING_KWARGS | self._frame_kwarg_names())

        data, token_counts = {}, [num_video_tokens or 0] * len(texts)
        per_prompt = self._videos_per_prompt(videos, texts) if videos is not None else [None] * len(texts)
        if any(video is not None for video in per_prompt):
            data, token_counts = self._process_videos(per_prompt, videos_kwargs)
        elif num_video_tokens is None:
            for index, prompt in enumerate(texts):
                if self.video_token in prompt:
                    raise ValueError(
                        f"prompt {index} holds {self.video_token} but neither videos nor num_video_tokens was given"
                    )
        flags = {
            key: text_kwargs.pop(key, options.get(key, False))
            for key in ("return_mm_token_type_ids", "return_text_replacement_offsets")
        }
        data.update(self._encode_texts(texts, token_counts, text_kwargs, **flags))
        return BatchFeature(
            data=data,
            tensor_type=text_kwargs.get("return_tensors"),
            skip_tensor_conversion=self.skip_tensor_conversion,
        )

    # -- inputs ----------------------------------------------------------------------------------------------------

    def _check_inputs(self, text, videos, num_video_tokens: int | None, kwargs: dict) -> list[str]:
        """The prompts as a list; clear errors for inputs and kwargs this processor does not take."""
        if kwargs.pop("images", None) is not None or kwargs.pop("audio", None) is not None:
            raise ValueError("Flash-VStream takes videos only; pass a still image as a one-frame video")
        for name in ("images_kwargs", "audio_kwargs"):
            if kwargs.get(name):
                raise ValueError(
                    f"Flash-VStream takes videos only: pass frame preprocessing options in videos_kwargs, not {name}"
                )
        unknown = sorted(set(kwargs) - self._known_kwarg_names())
        if unknown:
            raise TypeError(f"unexpected arguments to FlashVStreamProcessor: {unknown}")
        if text is None:
            raise ValueError("text is required; put a <video> placeholder where the video goes")
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("text must be a string or a list of strings")
        if videos is not None and num_video_tokens is not None:
            raise ValueError("pass either videos or num_video_tokens, not both")
        if num_video_tokens is not None and num_video_tokens < 0:
            raise ValueError(f"num_video_tokens must be >= 0, got {num_video_tokens}")
        placeholders = [t.count(self.video_token) for t in texts]
        if any(n > 1 for n in placeholders):
            raise ValueError(f"each prompt may hold one {self.video_token} placeholder, got counts {placeholders}")
        return texts

    def _known_kwarg_names(self) -> set[str]:
        """Every kwarg some transformers processor takes: the typed kwargs, flat or nested, and the image
        processor's own."""
        typed = FlashVStreamProcessorKwargs.__annotations__
        names = set(typed) | {"common_kwargs"}
        for hint in typed.values():
            names |= set(getattr(hint, "__annotations__", {}))
        return names | self._frame_kwarg_names()

    def _frame_kwarg_names(self) -> set[str]:
        return set(getattr(getattr(self.image_processor, "valid_kwargs", None), "__annotations__", {}))

    def _videos_per_prompt(self, videos, texts: list[str]) -> list:
        """One video or `None` per prompt: `videos` holds one per prompt, or one per `<video>` placeholder."""
        video_list = _as_video_list(videos)
        holders = [i for i, t in enumerate(texts) if self.video_token in t]
        if len(video_list) != len(texts):
            if len(video_list) != len(holders):
                raise ValueError(
                    f"got {len(video_list)} videos for {len(texts)} prompts ({len(holders)} with a "
                    f"{self.video_token} placeholder); give one video per prompt (None for a prompt without one) "
                    "or one per placeholder"
                )
            by_prompt = dict(zip(holders, video_list))
            video_list = [by_prompt.get(i) for i in range(len(texts))]
        for index, (video, prompt) in enumerate(zip(video_list, texts)):
            if video is not None and self.video_token not in prompt:
                raise ValueError(f"prompt {index} has no {self.video_token} placeholder for its video")
            if video is None and self.video_token in prompt:
                raise ValueError(
                    f"prompt {index} holds {self.video_token} but has no video; give it one, or pass "
                    "num_video_tokens without videos for a memory that already exists"
                )
        return video_list

    # -- videos ----------------------------------------------------------------------------------------------------

    def _process_videos(self, per_prompt: list, videos_kwargs: dict) -> tuple[dict, list[int]]:
        """`pixel_values_videos` `[B, T_max, 3, H, W]` and `video_frame_mask` `[B, T_max]` for one video or `None`
        per prompt, and each prompt's placeholder token count (from its own number of real frames)."""
        sampling, frame_kwargs = self._sampling(videos_kwargs), self._frame_kwargs(videos_kwargs)
        pixels = [None if v is None else self._preprocess_video(v, sampling, frame_kwargs) for v in per_prompt]
        token_counts = [0 if p is None else self.num_video_tokens(len(p)) for p in pixels]
        return _stack_videos(pixels), token_counts

    def _sampling(self, videos_kwargs: dict) -> _Sampling:
        """Frame sampling from `videos_kwargs`, the processor's `fps` and `video_backend` as defaults."""
        fps, num_frames = videos_kwargs.get("fps"), videos_kwargs.get("num_frames")
        backend = videos_kwargs.get("video_backend") or self.video_backend
        if fps is not None and num_frames is not None:
            raise ValueError(f"pass fps or num_frames, not both (got fps={fps}, num_frames={num_frames})")
        if videos_kwargs.get("do_sample_frames") is False:
            if fps is not None or num_frames is not None:
                raise ValueError("do_sample_frames=False decodes every frame; drop fps / num_frames or sample")
            return _Sampling(None, None, backend)
        if num_frames is not None:
            if not (isinstance(num_frames, int) and num_frames >= 1):
                raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
            return _Sampling(None, num_frames, backend)
        return _Sampling(self.fps if fps is None else fps, None, backend)

    def _frame_kwargs(self, videos_kwargs: dict) -> dict:
        """The image processor's options among `videos_kwargs` (frames are preprocessed as images)."""
        names = self._frame_kwarg_names() - {"return_tensors"}
        return {key: value for key, value in videos_kwargs.items() if key in names}

    def _preprocess_video(self, video, sampling: _Sampling, frame_kwargs: dict) -> np.ndarray:
        """One video -> `[T, 3, H, W]` float32; files are decoded and preprocessed a few frames at a time."""
        if isinstance(video, (str, os.PathLike)):
            decoded = iter_video_frames(video, sampling.fps, sampling.backend, sampling.num_frames)
            frames: Iterable = (frame.image for frame in decoded)
        else:
            frames = as_frames(video)
            if sampling.num_frames is not None:
                frames = [frames[i] for i in evenly_spaced_indices(len(frames), sampling.num_frames)]
        pixels = self.preprocess_frames(frames, **frame_kwargs)
        if len(pixels) == 0:
            raise ValueError("a video has zero frames")
        return pixels

    def preprocess_frames(self, frames: Iterable, return_tensors: str = "np", **frame_kwargs):
        """CLIP preprocessing of frames, the one entry point for the processor, the streaming session and the
        endpoint handler: `[T, 3, H, W]` float32 (`return_tensors="np"`, or `"pt"` for a tensor).

        Args:
            frames: PIL images or `[H, W, C]` arrays (`frames_flash_vstream.is_frame`), consumed
                `_FRAME_BATCH` at a time, so an iterator of decoded frames is never held whole. A stream checks
                its frames strictly first (`frames_flash_vstream.check_frame`).
            **frame_kwargs: the image processor's own options.
        """
        batches, batch = [], []
        for frame in frames:
            if not is_frame(frame):
                raise ValueError(f"a frame must be a PIL image or an [H, W, C] array, got {type(frame).__name__}")
            batch.append(frame)
            if len(batch) == _FRAME_BATCH:
                batches.append(self.image_processor(batch, return_tensors=return_tensors, **frame_kwargs)[_PIXELS])
                batch = []
        if batch:
            batches.append(self.image_processor(batch, return_tensors=return_tensors, **frame_kwargs)[_PIXELS])
            del batch
        if return_tensors == "pt":
            import torch  # only on the paths that ask for tensors (the session, the handler)

            return torch.cat(batches) if batches else torch.zeros(0, 3, 0, 0)
        if not batches:
            return np.zeros((0, 3, 0, 0), np.float32)
        return np.concatenate(batches).astype(np.float32)

    # -- text ------------------------------------------------------------------------------------------------------

    def _encode_texts(
        self,
        texts: list[str],
        token_counts: list[int],
        text_kwargs: dict,
        return_mm_token_type_ids: bool = False,
        return_text_replacement_offsets: bool = False,
    ) -> dict:
        """Tokenise, truncate and pad the prompts; `input_ids`/`attention_mask` `[B, L]` and the extras asked for."""
        with_offsets = bool(text_kwargs.get("return_offsets_mapping"))
        add_special_tokens = text_kwargs.get("add_special_tokens")
        add_special_tokens = True if add_special_tokens is None else add_special_tokens
        rows = [self._encode(t, n, add_special_tokens, with_offsets) for t, n in zip(texts, token_counts)]
        limit = self._truncation_limit(text_kwargs)
        if limit is not None:
            rows = [self._truncate(index, row, limit) for index, row in enumerate(rows)]

        padding = _strategy(text_kwargs.get("padding", False))
        padded = self.tokenizer.pad(
            {"input_ids": [row.ids for row in rows]},
            padding=padding,
            max_length=text_kwargs.get("max_length") if padding == "max_length" else None,
            pad_to_multiple_of=text_kwargs.get("pad_to_multiple_of"),
            padding_side=text_kwargs.get("padding_side"),
            return_attention_mask=text_kwargs.get("return_attention_mask"),
            verbose=text_kwargs.get("verbose", True),
        )
        data = {key: padded[key] for key in ("input_ids", "attention_mask") if key in padded}
        if with_offsets:
            side = text_kwargs.get("padding_side") or self.tokenizer.padding_side
            data["offset_mapping"] = [
                _pad_row(row.offsets, len(ids), side, (0, 0)) for row, ids in zip(rows, data["input_ids"])
            ]
        if return_mm_token_type_ids:
            data["mm_token_type_ids"] = self.create_mm_token_type_ids(data["input_ids"])
        if return_text_replacement_offsets:
            data["text_replacement_offsets"] = [row.replacements for row in rows]
        return data

    def _encode(self, text: str, num_tokens: int, add_special_tokens: bool, with_offsets: bool) -> _Encoded:
        """`[BOS] + ids(before) + [video] * num_tokens + ids(after)`, `after` tokenised on its own. Offsets index
        the text with `<video>` replaced by `num_tokens` copies of it, as transformers' processors expand it."""
        before, found, after = text.partition(self.video_token)
        head = self.tokenizer(before, add_special_tokens=add_special_tokens, return_offsets_mapping=with_offsets)
        ids = list(head["input_ids"])
        offsets = [tuple(span) for span in head["offset_mapping"]] if with_offsets else None
        if not found:
            return _Encoded(ids, offsets, [])
        start, width = len(before), len(self.video_token)
        replacement = self.video_token * num_tokens
        tail = self.tokenizer(after, add_special_tokens=False, return_offsets_mapping=with_offsets)
        ids += [self.video_token_id] * num_tokens + list(tail["input_ids"])
        if with_offsets:
            offsets += [(start + k * width, start + (k + 1) * width) for k in range(num_tokens)]
            shift = start + len(replacement)
            offsets += [(a + shift, b + shift) for a, b in tail["offset_mapping"]]
        span = {"type": "video", "span": (start, start + width), "new_span": (start, start + len(replacement))}
        return _Encoded(ids, offsets, [{**span, "text": self.video_token, "replacement": replacement}])

    def _truncation_limit(self, text_kwargs: dict) -> int | None:
        """The most tokens a prompt may keep, or `None`; the tokenizer's rules for `truncation` / `max_length`."""
        truncation, max_length = _strategy(text_kwargs.get("truncation")), text_kwargs.get("max_length")
        if truncation is None and max_length is not None and text_kwargs.get("padding", False) is False:
            truncation = True  # as tokenizers do: max_length alone truncates when not padding
        if truncation in (None, False, "do_not_truncate"):
            return None
        if truncation == "only_second":
            raise ValueError("truncation='only_second' truncates the second of text pairs; prompts are single texts")
        limit = self.tokenizer.model_max_length if max_length is None else max_length
        return None if limit > _LARGE_INTEGER else limit

    def _truncate(self, index: int, row: _Encoded, limit: int) -> _Encoded:
        """`row` cut to `limit` tokens on the tokenizer's truncation side; text only, never the placeholders."""
        if len(row.ids) <= limit:
            return row
        side = self.tokenizer.truncation_side
        keep = slice(0, limit) if side == "right" else slice(len(row.ids) - limit, len(row.ids))
        video = [i for i, token in enumerate(row.ids) if token == self.video_token_id]
        if video and (video[0] < keep.start or video[-1] >= keep.stop):
            raise ValueError(
                f"truncating prompt {index} ({len(row.ids)} tokens) to max_length={limit} from the {side} would cut "
                f"its {len(video)} {self.video_token} placeholder tokens (positions {video[0]} to {video[-1]}); "
                "raise max_length, or give the video fewer frames (fps / num_frames)"
            )
        offsets = row.offsets[keep] if row.offsets is not None else None
        return _Encoded(row.ids[keep], offsets, row.replacements)


def _strategy(value):
    """A padding/truncation value as a plain bool or string (`PaddingStrategy.LONGEST` -> `"longest"`)."""
    return getattr(value, "value", value)


def _refuse_unsupported(modality: str, kwargs: dict, supported: set[str]) -> None:
    """A clear error for a transformers kwarg this processor would otherwise ignore silently."""
    ignored = sorted(key for key, value in kwargs.items() if key not in supported and value not in (None, False))
    if ignored:
        raise ValueError(f"FlashVStreamProcessor does not support the {modality} kwargs {ignored}")


def _pad_row(values: list, length: int, side: str, fill) -> list:
    """`values` padded with `fill` to `length` on `side` ("left" or "right")."""
    padding = [fill] * (length - len(values))
    return padding + values if side == "left" else values + padding


def _stack_videos(pixels: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """Per-prompt `[T_i, 3, H, W]` frames (`None`: no video) -> `pixel_values_videos` `[B, T_max, 3, H, W]`
    float32 zero-padded at the end of the frame axis, and `video_frame_mask` `[B, T_max]` int64 (1 = real)."""
    real = [p for p in pixels if p is not None]
    sizes = sorted({p.shape[1:] for p in real})
    if len(sizes) > 1:
        raise ValueError(f"the videos' preprocessed frames differ in size, {sizes}; give every video one size")
    longest = max(len(p) for p in real)
    values = np.zeros((len(pixels), longest, *sizes[0]), dtype=np.float32)
    mask = np.zeros((len(pixels), longest), dtype=np.int64)
    for row, frames in enumerate(pixels):
        if frames is not None:
            values[row, : len(frames)] = frames
            mask[row, : len(frames)] = 1
    return {"pixel_values_videos": values, "video_frame_mask": mask}


def _as_video_list(videos) -> list:
    """Normalise the `videos` argument to a list of videos, `None` for a prompt without one."""
    if isinstance(videos, (str, os.PathLike)) or hasattr(videos, "ndim"):
        return [videos]
    if is_frame(videos):
        return [[videos]]
    videos = list(videos)
    if not videos:
        raise ValueError("videos is empty")
    if all(is_frame(v) for v in videos):  # one video given as a list of frames
        return [videos]
    return [_one_video(video) for video in videos]


def _one_video(video):
    """One prompt's entry: a video, or `None`. apply_chat_template passes each conversation's videos as a list
    (empty for a conversation without one)."""
    if isinstance(video, (list, tuple)) and not (video and all(is_frame(f) for f in video)):
        if len(video) > 1:
            raise ValueError(f"each prompt takes one video, got {len(video)}")
        return _one_video(video[0]) if video else None
    return video


__all__ = ["SYSTEM_PROMPT", "VICUNA_V1_CHAT_TEMPLATE", "FlashVStreamProcessor"]
