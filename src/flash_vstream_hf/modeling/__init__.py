"""Config, STAR memory and model. Imports only torch, transformers and its own modules (Hub remote-code ready)."""

from .configuration_flash_vstream import FlashVStreamConfig
from .memory_flash_vstream import FlashVStreamMemory
from .modeling_flash_vstream import (
    FlashVStreamForConditionalGeneration,
    FlashVStreamModel,
    FlashVStreamPreTrainedModel,
)
from .star_memory import StarLayout

__all__ = [
    "FlashVStreamConfig",
    "FlashVStreamForConditionalGeneration",
    "FlashVStreamMemory",
    "FlashVStreamModel",
    "FlashVStreamPreTrainedModel",
    "StarLayout",
]
