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


# A chat template in Qwen2-VL's shape (a video part, then the text), short enough for the word-level vocabulary.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}<|vision_start|> <|video_pad|> <|vision_end|> "
    "{% else %}{{ item['text'] }} {% endif %}{% endfor %}{% endfor %}"
)
SPECIAL_TOKENS = {VIDEO: "<|video_pad|>", START: "<|vision_start|>", END: "<|vision_end|>", IMAGE: "<|image_pad|>"}


def tiny_qwen2vl_tokenizer(vocab_size: int = 120):
    """A word-level tokenizer over `vocab_size` ids: Qwen2-VL's special tokens at the tiny config's ids, `<unk>` at
    0 and a word `w<i>` at every other id, so whatever a random model generates decodes to text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {SPECIAL_TOKENS.get(i, f"w{i}"): i for i in range(1, vocab_size)}
    vocab["<unk>"] = 0
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS.values())})
    return tokenizer


def tiny_qwen2vl_processor(clusters: int = 3, detail: int = 2):
    """The v2 processor for `tiny_qwen2vl_config(clusters, detail)`: 56x56 frames (a 4x4 patch grid)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ..qwen2vl.processing_flash_vstream_qwen2vl import FlashVStreamQwen2VLProcessor

    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    flash = {"flash_memory_temporal_length": 2 * clusters, "flash_memory_spatial_length": 2 * detail}
    return FlashVStreamQwen2VLProcessor(
        image_processor, tiny_qwen2vl_tokenizer(), chat_template=CHAT_TEMPLATE, flash_memory_config=flash
    )


def save_tiny_qwen2vl(folder, clusters: int = 3, detail: int = 2, seed: int = 0) -> str:
    """Write a tiny random v2 model and its processor to `folder` (what `--model FOLDER` loads); returns it."""
    import os

    import torch

    from ..qwen2vl.modeling_flash_vstream_qwen2vl import FlashVStreamQwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    model = FlashVStreamQwen2VLForConditionalGeneration(tiny_qwen2vl_config(clusters, detail)).eval()
    model.save_pretrained(folder)
    tiny_qwen2vl_processor(clusters, detail).save_pretrained(folder)
    return os.fspath(folder)
