"""Config, word-level tokenizer and processor of the small Flash-VStream trained on the synthetic world.

Sizes (a training step is tens of milliseconds on one CPU core):

- vision tower: CLIP ViT, 32 px frames, 8 px patches (4 x 4 grid), hidden 64, 2 layers, both used
  (`vision_feature_layer=-1`);
- language model: Llama, hidden 128, 2 layers, a 64-word vocabulary;
- STAR memory of 72 tokens: spatial 4 frames x 2x2 tokens (16), temporal 32 centroids x 1 token (32), abstract
  8 x 1 token (8), retrieved 4 key frames x 2x2 tokens (16). Retrieval uses `retrieval_mode="paper"` (the key
  frame nearest to each of the largest clusters): the released code's mode keeps the first frames of the stream
  as key frames for ever, which says nothing about which content lasted longest.

The ablations at the same 72-token budget are the same weights with another memory layout (`layout_overrides`):
`"recent"` keeps only the 18 most recent frames at spatial resolution, `"no-retrieval"` trades the 4 key frames
for 16 more temporal centroids.
"""

from __future__ import annotations

from ..modeling import FlashVStreamConfig
from ..processing import SYSTEM_PROMPT, VICUNA_V1_CHAT_TEMPLATE, FlashVStreamProcessor
from .questions import vocabulary

IMAGE_SIZE = 32
VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
}
TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
MEMORY = {
    "spatial_pool_size": 2,
    "temporal_pool_size": 1,
    "abstract_pool_size": 1,
    "spatial_length": 4,
    "temporal_length": 32,
    "abstract_length": 8,
    "retrieved_length": 4,
    "retrieval_mode": "paper",
}
# Ablations at the same 72-token budget (see the module docstring).
LAYOUTS: dict[str, dict] = {
    "star": {},
    "no-retrieval": {"retrieved_length": 0, "temporal_length": 48},
    "recent": {"spatial_length": 18, "temporal_length": 0, "abstract_length": 0, "retrieved_length": 0},
}
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<video>")
# The chat words of the template below, then the question and answer words.
CHAT_WORDS = ("user", "assistant", ":")
# vicuna_v1 without its system prompt: 30 words of preamble would be most of every training sequence.
CHAT_TEMPLATE = VICUNA_V1_CHAT_TEMPLATE.replace(SYSTEM_PROMPT, "")


def word_vocabulary() -> dict[str, int]:
    """Token ids: the special tokens first (`<pad>` 0, `<s>` 1, `</s>` 2), then every word in a fixed order."""
    words = [*SPECIAL_TOKENS, *CHAT_WORDS, *vocabulary()]
    return {word: index for index, word in enumerate(words)}


def demo_tokenizer():
    """A `PreTrainedTokenizerFast` over a `tokenizers` WordLevel model: lower-cased, split on whitespace and
    punctuation, `<s>` prepended, `<video>` special, padding on the left (batched generation continues every
    prompt where it ends)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from ..tiny import wrap_tokenizer

    backend = Tokenizer(models.WordLevel(vocab=word_vocabulary(), unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return wrap_tokenizer(backend, pad_token="<pad>")


def demo_config(layout: str = "star", **overrides) -> FlashVStreamConfig:
    """The demo model's config, with the memory layout `layout` (one of `LAYOUTS`)."""
    vocab_size = -(-len(word_vocabulary()) // 64) * 64
    fields = {
        "vision_config": dict(VISION),
        "text_config": {**TEXT, "vocab_size": vocab_size},
        "video_token_id": word_vocabulary()["<video>"],
        "vision_feature_layer": -1,
        **MEMORY,
        **LAYOUTS[layout],
    }
    fields.update(overrides)
    return FlashVStreamConfig(**fields)


def demo_processor(config: FlashVStreamConfig | None = None) -> FlashVStreamProcessor:
    """The processor for `config` (default `demo_config()`): CLIP preprocessing at 32 px, the word tokenizer."""
    from transformers import CLIPImageProcessorPil

    config = config or demo_config()
    size = config.vision_config.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return FlashVStreamProcessor.from_model_config(
        config, image_processor, demo_tokenizer(), chat_template=CHAT_TEMPLATE
    )


def with_layout(model, layout: str):
    """A `FlashVStreamForConditionalGeneration` with the memory layout `layout` that *shares* every weight of
    `model` (`sharing_modules_of`: training the one trains the other)."""
    if layout == "star" and model.config.temporal_length == MEMORY["temporal_length"]:
        return model
    return type(model).sharing_modules_of(model, demo_config(layout))
