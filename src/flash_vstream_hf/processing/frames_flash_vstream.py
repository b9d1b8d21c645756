"""What counts as a frame: the one definition for the processor, the streaming session and the endpoint handler.

numpy only (PIL images and torch tensors are recognised without importing either), so it ships flat next to the
processor as Hub remote code. Two levels:

- `is_frame` / `as_frames`: what the processor takes as a frame of an already sampled video (a PIL image, or a
  2-D / 3-D array or tensor); the image processor then does the rest, as for any image.
- `check_frame`: what a stream may queue for the model: an `[H, W, 3]` uint8 RGB array with no NaN or infinite
  value (a PIL image or a tensor is converted first). Anything else raises, naming what is wrong.

CLIP preprocessing of frames has one entry point too: `FlashVStreamProcessor.preprocess_frames`.
"""

from __future__ import annotations

import numpy as np


def is_frame(item) -> bool:
    """A single image: PIL image or a 2-D/3-D array or tensor."""
    if hasattr(item, "getbands"):  # PIL.Image.Image without importing PIL
        return True
    return hasattr(item, "ndim") and item.ndim in (2, 3)


def as_frames(video) -> list:
    """A video given as an array `[T, H, W, C]` or a list of frames -> list of frames."""
    if hasattr(video, "ndim"):
        if video.ndim != 4:
            raise ValueError(f"a video array must be [frames, height, width, channels], got shape {tuple(video.shape)}")
        return list(video.numpy() if hasattr(video, "numpy") else video)
    frames = list(video)
    if not all(is_frame(f) for f in frames):
        raise ValueError("a video list must hold frames (PIL images or [height, width, channels] arrays)")
    return frames


def to_rgb_array(image, strict: bool = False):
    """PIL images become `[H, W, 3]` arrays and tensors arrays; anything else is passed on as it is. A PIL image
    that cannot be converted (a truncated file) is passed on too, unless `strict`: `check_frame` rejects it."""
    if hasattr(image, "getbands"):  # PIL.Image.Image without importing PIL
        try:
            return _pil_to_rgb(image)
        except Exception:
            if strict:
                raise
            return image
    if hasattr(image, "numpy") and hasattr(image, "detach"):  # torch tensor
        return image.detach().cpu().numpy()
    return image


def check_frame(image) -> np.ndarray:
    """The `[H, W, 3]` uint8 RGB array of a frame (a PIL image, an array or a tensor); raises `ValueError` or
    `TypeError` naming what is wrong, e.g. NaN or infinite values, which must never reach the model."""
    array = to_rgb_array(image, strict=True)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"a frame must be a PIL image or an [H, W, 3] uint8 array, got {type(image).__name__}")
    if array.ndim != 3 or array.shape[-1] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"a frame must be an [H, W, 3] array, got shape {tuple(array.shape)}")
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise ValueError(f"a frame has NaN or infinite values ({array.dtype})")
    if array.dtype != np.uint8:
        raise ValueError(f"a frame must be uint8 RGB, got dtype {array.dtype}")
    return array


def _pil_to_rgb(image) -> np.ndarray:
    # a float image: RGB conversion would turn NaN/inf into ordinary pixels, so check it first
    if getattr(image, "mode", None) == "F" and not np.isfinite(np.asarray(image)).all():
        raise ValueError(f"a frame has NaN or infinite values (PIL mode {image.mode})")
    return np.asarray(image.convert("RGB"))


__all__ = ["as_frames", "check_frame", "is_frame", "to_rgb_array"]
