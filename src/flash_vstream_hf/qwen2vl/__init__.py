"""Flash-VStream v2 (Flash-VStream-Qwen): Qwen2-VL with a Flash Memory, as a transformers 5 model.

Self-contained (imports only torch, transformers and its own modules) so the folder can ship as Hub remote code.
"""

from .configuration_flash_vstream_qwen2vl import FlashVStreamQwen2VLConfig, FlashVStreamQwen2VLVisionConfig
from .memory_flash_vstream_qwen2vl import FlashVStreamQwen2VLMemory
from .modeling_flash_vstream_qwen2vl import (
    FlashVStreamQwen2VLForConditionalGeneration,
    FlashVStreamQwen2VLModel,
    FlashVStreamQwen2VLPreTrainedModel,
)
from .processing_flash_vstream_qwen2vl import FlashVStreamQwen2VLProcessor

__all__ = [
    "FlashVStreamQwen2VLConfig",
    "FlashVStreamQwen2VLForConditionalGeneration",
    "FlashVStreamQwen2VLMemory",
    "FlashVStreamQwen2VLModel",
    "FlashVStreamQwen2VLPreTrainedModel",
    "FlashVStreamQwen2VLProcessor",
    "FlashVStreamQwen2VLVisionConfig",
]
