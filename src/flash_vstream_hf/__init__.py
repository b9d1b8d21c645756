"""Flash-VStream (real-time long-video-stream understanding with STAR memory) as a native transformers model.

Importing the package registers the model with the transformers Auto classes, so `AutoConfig`, `AutoModel`,
`AutoModelForImageTextToText` and `AutoProcessor` resolve to the classes below for `model_type="flash_vstream"`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging

from .modeling import (
    FlashVStreamConfig,
    FlashVStreamForConditionalGeneration,
    FlashVStreamMemory,
    FlashVStreamModel,
    FlashVStreamPreTrainedModel,
)
from .processing import FlashVStreamProcessor
from .qwen2vl import (
    FlashVStreamQwen2VLConfig,
    FlashVStreamQwen2VLForConditionalGeneration,
    FlashVStreamQwen2VLModel,
    FlashVStreamQwen2VLProcessor,
)

__version__ = "0.1.0"

# transformers' verbosity (`set_verbosity_*`, TRANSFORMERS_VERBOSITY) is the level of its root logger, which
# loggers outside the `transformers.*` names do not follow (huggingface/transformers#17094): hanging this package's
# top logger under it makes every flash_vstream_hf logger take transformers' level, handler and propagation.
logging.get_logger(__name__).parent = logging.get_logger()

AutoConfig.register(FlashVStreamConfig.model_type, FlashVStreamConfig, exist_ok=True)
AutoModel.register(FlashVStreamConfig, FlashVStreamModel, exist_ok=True)
AutoModelForImageTextToText.register(FlashVStreamConfig, FlashVStreamForConditionalGeneration, exist_ok=True)
AutoProcessor.register(FlashVStreamConfig, FlashVStreamProcessor, exist_ok=True)
# Flash-VStream v2 (Qwen2-VL + Flash Memory), model_type "flash_vstream_qwen2_vl".
AutoConfig.register(FlashVStreamQwen2VLConfig.model_type, FlashVStreamQwen2VLConfig, exist_ok=True)
AutoModel.register(FlashVStreamQwen2VLConfig, FlashVStreamQwen2VLModel, exist_ok=True)
AutoModelForImageTextToText.register(
    FlashVStreamQwen2VLConfig, FlashVStreamQwen2VLForConditionalGeneration, exist_ok=True
)
AutoProcessor.register(FlashVStreamQwen2VLConfig, FlashVStreamQwen2VLProcessor, exist_ok=True)

__all__ = [
    "FlashVStreamConfig",
    "FlashVStreamForConditionalGeneration",
    "FlashVStreamMemory",
    "FlashVStreamModel",
    "FlashVStreamPreTrainedModel",
    "FlashVStreamProcessor",
    "FlashVStreamQwen2VLConfig",
    "FlashVStreamQwen2VLForConditionalGeneration",
    "FlashVStreamQwen2VLModel",
    "FlashVStreamQwen2VLProcessor",
    "NoFramesError",
    "StreamingSession",
]


def __getattr__(name: str):
    # The streaming runtime is imported on first use, so `import flash_vstream_hf` stays light.
    if name in ("StreamingSession", "NoFramesError"):
        from . import streaming

        return getattr(streaming, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
