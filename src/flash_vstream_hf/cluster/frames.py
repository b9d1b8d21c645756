"""Pushed frames: base64 images with timestamps, decoded with the endpoint handler's limits."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..conversion.handler import IMAGE_FORMATS, MAX_FRAME_PIXELS
from .errors import ApiError


def decode_frame(data: bytes, field: str) -> np.ndarray:
    """`[H, W, 3]` uint8 of a PNG/JPEG/WEBP/BMP image; an `ApiError` naming `field` for anything else."""
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if image.width * image.height > MAX_FRAME_PIXELS:
            raise ApiError(413, field, f"is {image.width}x{image.height}; at most {MAX_FRAME_PIXELS:,} pixels")
        return np.asarray(image.convert("RGB"))
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ApiError(400, field, f"is not a {', '.join(IMAGE_FORMATS)} image ({error})") from error


def check_timestamps(timestamps: list[float], after: float | None) -> None:
    """Pushed timestamps are finite and increasing, and later than the stream's last frame."""
    previous = after
    for index, timestamp in enumerate(timestamps):
        if not math.isfinite(timestamp) or timestamp < 0:
            raise ApiError(422, f"frames[{index}].timestamp", f"must be a finite number >= 0, got {timestamp}")
        if previous is not None and timestamp <= previous:
            raise ApiError(422, f"frames[{index}].timestamp", f"must be later than {previous}, got {timestamp}")
        previous = timestamp
