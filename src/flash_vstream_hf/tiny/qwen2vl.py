"""A tiny random Flash-VStream v2 (Qwen2-VL) config for tests and benchmarks: Qwen2-VL's patching (14 px, temporal
patch 2, merge 2) kept, everything else small, and the special token ids moved into a 120-word vocabulary."""

from __future__ import annotations

from ..qwen2vl.configuration_flash_vstream_qwen2vl import FlashVStreamQwen2VLConfig

VIDEO, START, END, IMAGE = 100, 101, 102, 103


def tiny_qwen2vl_config(clusters: int = 3, detail: int = 2, **overrides) -> FlashVStreamQwen2VLConfig:
    """`clusters` CSM clusters (K) and `detail` DAM patches (S); `overrides` replace top-level fields."""
    fields = {
        "vision_config": {
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "flash_memory_config": {
                "flash_memory_temporal_length": 2 * clusters,
                "flash_memory_spatial_length": 2 * detail,
            },
        },
        "text_config": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 128,
            "vocab_size": 120,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        "video_token_id": VIDEO,
        "vision_start_token_id": START,
        "vision_end_token_id": END,
        "image_token_id": IMAGE,
    }
    fields.update(overrides)
    return FlashVStreamQwen2VLConfig(**fields)
