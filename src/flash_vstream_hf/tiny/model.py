"""The tiny Flash-VStream model, its config, processor and tokenizer, built on the spot with no download.

It exercises every code path of the real model at toy sizes (random weights, so answers are gibberish):
`--model tiny` runs on it, and so do the tests. Layer sizes are multiples of 64 so bitsandbytes 4-bit works.
"""

from __future__ import annotations

import string

import numpy as np
import torch

from ..modeling import FlashVStreamConfig, FlashVStreamForConditionalGeneration
from ..processing import FlashVStreamProcessor

TINY_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 4,  # 8 x 8 patch grid
}
TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
# 16 spatial, 4 temporal and 1 abstract token per frame; 5 clusters, 4 abstract entries, 2 key frames.
TINY_MEMORY = {
    "spatial_pool_size": 4,
    "temporal_pool_size": 2,
    "abstract_pool_size": 1,
    "spatial_length": 1,
    "temporal_length": 5,
    "abstract_length": 4,
    "retrieved_length": 2,
}


def tiny_tokenizer():
    """A Llama-style character tokenizer (metaspace, byte fallback, BOS) with the `<video>` special token; it pads
    with `<unk>` on the left, as the converted tokenizer does, so batched generation continues every prompt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    for char in "▁" + string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return wrap_tokenizer(backend, pad_token="<unk>")


def wrap_tokenizer(backend, pad_token: str):
    """A `PreTrainedTokenizerFast` around a `tokenizers` backend with the `<s>`/`</s>`/`<unk>`/`<video>` tokens both
    small tokenizers share, padding on the left (batched generation continues every prompt where it ends)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token=pad_token,
        padding_side="left",
        extra_special_tokens={"video_token": "<video>"},
    )


def tiny_config(**overrides) -> FlashVStreamConfig:
    """A tiny config matching `tiny_tokenizer()`; keyword arguments override any field."""
    tokenizer = tiny_tokenizer()
    vocab_size = -(-len(tokenizer) // 64) * 64
    fields = {
        "vision_config": dict(TINY_VISION),
        "text_config": {**TINY_TEXT, "vocab_size": vocab_size},
        "video_token_id": tokenizer.video_token_id,
        **TINY_MEMORY,
    }
    fields.update(overrides)
    return FlashVStreamConfig(**fields)


def tiny_processor(config: FlashVStreamConfig | None = None, **kwargs) -> FlashVStreamProcessor:
    """A processor for `config` (default `tiny_config()`): tiny tokenizer and CLIP preprocessing at its size."""
    from transformers import CLIPImageProcessorPil

    config = config or tiny_config()
    size = config.vision_config.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return FlashVStreamProcessor.from_model_config(config, image_processor, tiny_tokenizer(), **kwargs)


def tiny_model(config: FlashVStreamConfig | None = None, seed: int = 0) -> FlashVStreamForConditionalGeneration:
    """A randomly initialised model for `config` (default `tiny_config()`), in eval mode."""
    torch.manual_seed(seed)
    model = FlashVStreamForConditionalGeneration(config or tiny_config()).eval()
    # Never sample the 256 byte-fallback tokens (ids 3..258), so the random model's gibberish is printable.
    model.generation_config.suppress_tokens = list(range(3, 3 + 256))
    return model
