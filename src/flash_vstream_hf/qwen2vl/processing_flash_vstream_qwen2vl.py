"""Processor of Flash-VStream v2: Qwen2-VL's processor whose videos become Flash Memory placeholders.

Two differences from `Qwen2VLProcessor`, both the original's (`models/vstream_qwen2vl_processor.py`):
- frames are resized to multiples of 56 px (`14 * merge 2 * additional_pool_size 2`) instead of 28, so the
  low-resolution (2x2-pooled) copy of every frame still cuts into whole 2x2 merge blocks;
- each `<|video_pad|>` becomes as many placeholders as the video's memory has tokens (DAM + CSM), not one per
  merged patch.

Frames are resized here with Pillow (bicubic, as the original), then rescaled and normalised by Qwen2-VL's image
processor (the PIL one: no torchvision needed) and cut into Qwen2-VL's patch rows. From the same uint8 frames the
output equals the original's bit for bit under the same Pillow release (tests/test_qwen2vl_parity.py;
docs/qwen2vl.md, "The processor beside the original's").
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_transforms import resize
from transformers.image_utils import PILImageResampling
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

from .configuration_flash_vstream_qwen2vl import DEFAULT_FLASH_MEMORY_CONFIG, check_flash_memory_config
from .flash_memory import MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE, num_memory_tokens


class FlashVStreamQwen2VLProcessor(Qwen2VLProcessor):
    r"""
    Tokenizer + Qwen2-VL image processor (used frame by frame for videos) + the Flash Memory token count.

    Args:
        image_processor (`Qwen2VLImageProcessorPil` or `Qwen2VLImageProcessor`): resizing bounds
            (`min_pixels`/`max_pixels`, read from `size`), rescaling and normalisation of the frames.
        tokenizer: Qwen2-VL's tokenizer (with `<|video_pad|>`).
        flash_memory_config (`dict`, *optional*): the model's `vision_config.flash_memory_config` (the released
            values by default); it decides how many tokens each video's memory has.
    """

    attributes = ["image_processor", "tokenizer"]  # noqa: RUF012 (ProcessorMixin class attribute)
    valid_processor_kwargs = ["flash_memory_config", "chat_template"]  # noqa: RUF012

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, flash_memory_config=None, **kwargs):
        self.flash_memory_config = {**DEFAULT_FLASH_MEMORY_CONFIG, **(flash_memory_config or {})}
        check_flash_memory_config(self.flash_memory_config)
        super().__init__(image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kwargs)

    @property
    def resize_factor(self) -> int:
        """Frames are resized to multiples of this many pixels (56 for the released 2x2 pool)."""
        return PATCH_SIZE * MERGE_SIZE * self.flash_memory_config["flash_memory_temporal_poolsize"]

    def num_memory_tokens(self, video_grid_thw) -> int:
        """Tokens of the memory of a video with patch grid `(t, h, w)`: its number of `<|video_pad|>` tokens."""
        grid = tuple(int(v) for v in video_grid_thw)
        config = self.flash_memory_config
        return num_memory_tokens(
            grid,
            config["flash_memory_temporal_length"] // 2,
            config["flash_memory_spatial_length"] // 2,
            config["flash_memory_temporal_poolsize"],
        )

    def preprocess_video(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """`(pixel_values_videos [t*h*w, 3*2*14*14], video_grid_thw [3])` of one video.

        frames: `[T, H, W, 3]` uint8 (array or tensor) or a list of `[H, W, 3]` frames / PIL images. A 1-frame
        clip is tiled to 2 frames (as the original); an odd number of frames repeats the last one.
        """
        frames = [np.asarray(frame) for frame in frames]
        if not frames:
            raise ValueError("a video needs at least one frame, got 0")
        video = self._normalised_frames(frames)
        if video.shape[0] % TEMPORAL_PATCH_SIZE:
            video = torch.cat([video, video[-1:].expand(TEMPORAL_PATCH_SIZE - video.shape[0] % 2, -1, -1, -1)])
        height, width = video.shape[-2:]
        return _patchify(video), torch.tensor([video.shape[0] // 2, height // PATCH_SIZE, width // PATCH_SIZE])

    def preprocess_frames(self, frames, return_tensors: str = "pt") -> torch.Tensor:
        """Stream frames -> `[T, 3, H, W]` float pixels, resized to multiples of 56 px and normalised, what
        `model.get_frame_features(pixels[None])` takes (each frame becomes one temporal patch there, tiled to 2
        frames as the original's streaming path does). The size comes from the first frame (`smart_resize` within
        `min_pixels` / `max_pixels`); every frame of a call is resized to it.

        frames: `[H, W, 3]` uint8 arrays or PIL images (or a `[T, H, W, 3]` array).
        """
        if return_tensors != "pt":
            raise ValueError(
                f"preprocess_frames returns torch tensors: return_tensors must be 'pt', got {return_tensors!r}"
            )
        frames = [np.asarray(frame) for frame in frames]
        if not frames:
            raise ValueError("preprocess_frames needs at least one frame, got 0")
        return self._normalised_frames(frames)

    def _normalised_frames(self, frames: list[np.ndarray]) -> torch.Tensor:
        """`[T, 3, H, W]` rescaled and normalised frames, all resized to the 56-px target of the first frame's size.

        The frames are resized here, with PIL (`transformers.image_transforms.resize`, the function the original's
        image processor resizes with), and the image processor only rescales and normalises them: left to resize,
        Qwen2-VL's image processor rounds to its own 28-px grid, a different size for most frame shapes.
        """
        height, width = self._target_size(*frames[0].shape[:2])
        resample = getattr(self.image_processor, "resample", PILImageResampling.BICUBIC)
        resized = [resize(frame, (height, width), resample=resample) for frame in frames]
        processed = self.image_processor(images=resized, do_resize=False, return_tensors="pt")
        return _frames_from_image_rows(processed, len(frames), height, width)

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        processor = self.image_processor
        size = getattr(processor, "size", None) or {}
        min_pixels = size.get("shortest_edge", getattr(processor, "min_pixels", 56 * 56))
        max_pixels = size.get("longest_edge", getattr(processor, "max_pixels", 28 * 28 * 1280))
        return smart_resize(height, width, factor=self.resize_factor, min_pixels=min_pixels, max_pixels=max_pixels)

    def __call__(
        self, text=None, videos=None, images=None, return_tensors="pt", num_video_tokens: int | None = None, **kwargs
    ) -> BatchFeature:
        """Tokenize `text` (a string or a list) with each `<|video_pad|>` expanded to its video's memory tokens.

        videos: one video or a list of videos (see `preprocess_video`), in the order of their `<|video_pad|>`.
        num_video_tokens: instead of videos, the token count of a memory that already exists
            (`memory.get_seq_length()`): each prompt's one `<|video_pad|>` becomes that many placeholders.
        Returns `input_ids`, `attention_mask` and, with videos, `pixel_values_videos` and `video_grid_thw`.
        """
        if images is not None:
            raise ValueError("Flash-VStream-Qwen reads videos only; got images")
        texts = [text] if isinstance(text, str) else list(text or [""])
        data = {}
        if num_video_tokens is not None:
            if videos is not None:
                raise ValueError("pass either videos or num_video_tokens, not both")
            if not isinstance(num_video_tokens, int) or isinstance(num_video_tokens, bool) or num_video_tokens < 1:
                raise ValueError(f"num_video_tokens must be an int >= 1, got {num_video_tokens!r}")
            for index, sample in enumerate(texts):
                if sample.count(self.video_token) != 1:
                    raise ValueError(
                        f"with num_video_tokens, each prompt holds one {self.video_token}; prompt {index} holds "
                        f"{sample.count(self.video_token)}"
                    )
            texts = [
                sample.replace(self.video_token, "<|placeholder|>" * num_video_tokens).replace(
                    "<|placeholder|>", self.video_token
                )
                for sample in texts
            ]
        if videos is not None:
            if _is_one_video(videos):
                videos = [videos]
            rows, grids = zip(*(self.preprocess_video(video) for video in videos))
            data["pixel_values_videos"] = torch.cat(rows)
            data["video_grid_thw"] = torch.stack(grids)
            counts = iter(self.num_memory_tokens(grid) for grid in grids)
            expanded = []
            for sample in texts:
                pieces = sample.split(self.video_token)
                out = pieces[0]
                for piece in pieces[1:]:
                    try:
                        out += "<|placeholder|>" * next(counts) + piece
                    except StopIteration:
                        raise ValueError("text has more video placeholders than videos were given") from None
                expanded.append(out.replace("<|placeholder|>", self.video_token))
            if next(counts, None) is not None:
                raise ValueError("more videos were given than the text has video placeholders")
            texts = expanded
        encoded = self.tokenizer(texts, return_tensors=return_tensors, **kwargs)
        return BatchFeature(data={**encoded, **data})


def _is_one_video(videos) -> bool:
    first = videos[0] if isinstance(videos, (list, tuple)) else videos
    return np.asarray(first).ndim == 3 if isinstance(videos, (list, tuple)) else np.asarray(videos).ndim == 4


def _frames_from_image_rows(processed, num_frames: int, height: int, width: int) -> torch.Tensor:
    """`[T, C, H, W]` frames from Qwen2-VL image-processor output (each frame a 2-frame tiled image)."""
    rows = processed["pixel_values"]  # [T * h * w, C * 2 * 14 * 14]
    grids = processed["image_grid_thw"]
    if not bool((grids == torch.tensor([1, height // 14, width // 14])).all()):
        raise ValueError(f"the image processor resized frames to {grids[0].tolist()}, expected {height}x{width} px")
    h, w = height // 14, width // 14
    x = rows.reshape(num_frames, h // 2, w // 2, 2, 2, -1, TEMPORAL_PATCH_SIZE, 14, 14)[:, :, :, :, :, :, 0]
    return x.permute(0, 5, 1, 3, 6, 2, 4, 7).reshape(num_frames, -1, height, width)


def _patchify(video: torch.Tensor) -> torch.Tensor:
    """Qwen2-VL patch rows `[t * h * w, C * 2 * 14 * 14]` of frames `[T, C, H, W]` (T even)."""
    frames, channels, height, width = video.shape
    t, h, w = frames // 2, height // 14, width // 14
    x = video.reshape(t, TEMPORAL_PATCH_SIZE, channels, h // 2, 2, 14, w // 2, 2, 14)
    return x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * h * w, channels * TEMPORAL_PATCH_SIZE * 14 * 14)


__all__ = ["FlashVStreamQwen2VLProcessor"]
