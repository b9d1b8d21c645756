"""The benchmark model: ViT-L/14-shaped vision tower, released STAR layout and a Vicuna-7B-shaped language model
with as many decoder layers as the machine affords (random weights)."""

from __future__ import annotations

import torch

from ..modeling import FlashVStreamConfig, FlashVStreamForConditionalGeneration
from ..modeling.configuration_flash_vstream import CLIP_VIT_L14_224, VICUNA_7B
from .sizes import Sizes


def bench_config(sizes: Sizes) -> FlashVStreamConfig:
    vision = {**CLIP_VIT_L14_224, "num_hidden_layers": sizes.vision_layers}
    text = {**VICUNA_7B, **sizes.llm}
    return FlashVStreamConfig(vision_config=vision, text_config=text)


def bench_model(sizes: Sizes, seed: int = 0) -> FlashVStreamForConditionalGeneration:
    """A randomly initialised float32 model for `sizes`, in eval mode."""
    torch.manual_seed(seed)
    return FlashVStreamForConditionalGeneration(bench_config(sizes)).eval()


def vision_flops(config: FlashVStreamConfig) -> int:
    """Floating-point operations (2 per multiply-add) of one frame through the vision tower's encoder layers,
    patch embedding included; norms and activations are left out (they are a few percent)."""
    vision = config.vision_config
    grid = vision.image_size // vision.patch_size
    tokens = grid * grid + 1  # patches + CLS
    width, mlp = vision.hidden_size, vision.intermediate_size
    per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 2 * 2 * tokens * tokens * width
    patch_embedding = 2 * grid * grid * 3 * vision.patch_size**2 * width
    return vision.num_hidden_layers * per_layer + patch_embedding
