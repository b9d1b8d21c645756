"""Tiny Flash-VStream models, tokenizer and synthetic videos, built on the spot with no download (`--model tiny`,
the tests, the README's first example)."""

from .model import (
    TINY_MEMORY,
    TINY_TEXT,
    TINY_VISION,
    tiny_config,
    tiny_model,
    tiny_processor,
    tiny_tokenizer,
    wrap_tokenizer,
)
from .video import synthetic_frame, write_synthetic_video

__all__ = [
    "TINY_MEMORY",
    "TINY_TEXT",
    "TINY_VISION",
    "synthetic_frame",
    "tiny_config",
    "tiny_model",
    "tiny_processor",
    "tiny_tokenizer",
    "wrap_tokenizer",
    "write_synthetic_video",
]
