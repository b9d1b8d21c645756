"""Video decoding, frame sampling, the processor and its chat template (Hub remote-code ready)."""

from .processing_flash_vstream import SYSTEM_PROMPT, VICUNA_V1_CHAT_TEMPLATE, FlashVStreamProcessor
from .video_io import TruncatedVideoError, VideoFrame, available_backends, iter_video_frames, read_video_frames

__all__ = [
    "FlashVStreamProcessor",
    "SYSTEM_PROMPT",
    "TruncatedVideoError",
    "VICUNA_V1_CHAT_TEMPLATE",
    "VideoFrame",
    "available_backends",
    "iter_video_frames",
    "read_video_frames",
]
