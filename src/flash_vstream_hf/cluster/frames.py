"""Pushed frames: base64 images with timestamps, decoded with the endpoint handler's rules and limits."""

from __future__ import annotations

import math

import numpy as np

from ..conversion.handler import PayloadError, decode_image
from .errors import ApiError


def decode_frame(data: bytes, field: str) -> np.ndarray:
    """`[H, W, 3]` uint8 of a PNG/JPEG/WEBP/BMP image (the handler's formats and pixel limit); an `ApiError`
    naming `field` for anything else."""
    try:
        return np.asarray(decode_image(data, field))
    except PayloadError as error:
        raise ApiError(error.status, error.field, str(error).removeprefix(f"{error.field}: ")) from error


def check_timestamps(timestamps: list[float], after: float | None) -> None:
    """Pushed timestamps are finite and increasing, and later than the stream's last frame."""
    previous = after
    for index, timestamp in enumerate(timestamps):
        if not math.isfinite(timestamp) or timestamp < 0:
            raise ApiError(422, f"frames[{index}].timestamp", f"must be a finite number >= 0, got {timestamp}")
        if previous is not None and timestamp <= previous:
            raise ApiError(422, f"frames[{index}].timestamp", f"must be later than {previous}, got {timestamp}")
        previous = timestamp
