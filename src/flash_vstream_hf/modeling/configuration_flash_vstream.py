"""Configuration of Flash-VStream (CLIP vision tower + STAR memory + Llama), transformers 5 style."""

from __future__ import annotations

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

from .transformers_compat import check_transformers_version

# Before anything else can fail with a confusing error, also in the Hub remote-code bundle (where this file is the
# first one transformers imports): a release outside the tested range is refused with the range to install.
check_transformers_version()

RETRIEVAL_MODES = ("original", "paper")

# CLIP ViT-L/14 at 224 px, as used by the released Flash-VStream-7b.
CLIP_VIT_L14_224 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}

# Vicuna-7B v1.5, with the vocabulary grown by the `<video>` token and padded to a multiple of 64.
VICUNA_7B = {
    "vocab_size": 32064,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}


@strict
class FlashVStreamConfig(PreTrainedConfig):
    r"""
    Configuration of a [`FlashVStreamForConditionalGeneration`]. The defaults describe the released
    Flash-VStream-7b: CLIP ViT-L/14 (224 px), a 2-layer MLP projector, Vicuna-7B and a 681-token STAR memory.

    Paper names (arXiv 2406.08085, Sec. 3) are given in brackets. A frame is encoded to a `g x g` patch grid
    (`g = image_size // patch_size`, 16 for ViT-L/14 at 224 px), average-pooled to `P x P` tokens per memory.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*): CLIP vision tower config.
        text_config (`dict` or `PreTrainedConfig`, *optional*): Llama language model config.
        video_token_id (`int`, defaults to 32000): id of the `<video>` placeholder token.
        vision_feature_layer (`int`, defaults to -2): vision hidden state used as frame features (CLS dropped).
        projector_hidden_act (`str`, defaults to `"gelu"`): activation of the 2-layer MLP projector.
        spatial_pool_size (`int`, defaults to 8): [P_spa] side of the spatial (current) and retrieved frames.
        temporal_pool_size (`int`, defaults to 4): [P_tem] side of each temporal-memory centroid.
        abstract_pool_size (`int`, defaults to 1): [P_abs] side of each abstract-memory entry.
        spatial_length (`int`, defaults to 1): [N_spa] most recent frames kept at full spatial resolution.
        temporal_length (`int`, defaults to 25): [N_tem] temporal-memory clusters (weighted k-means K).
        abstract_length (`int`, defaults to 25): [N_abs] abstract-memory entries; also its update chunk size.
        retrieved_length (`int`, defaults to 3): [N_ret] key frames retrieved at spatial resolution.
        abstract_update_ratio (`float`, defaults to 0.2): [alpha] weight of new frames in the abstract update.
        abstract_hidden_size (`int`, defaults to 32): query/key size of the semantic attention of the abstract update.
        kmeans_max_iter (`int`, defaults to 10): iterations of the temporal k-means.
        kmeans_tol (`float`, defaults to 1e-4): k-means stops when the summed centroid shift is below this.
        retrieval_mode (`str`, defaults to `"original"`): `"original"` reproduces the released code (bug B1
            in docs/original_model.md: cluster ids index frames, so key frames come from the first `temporal_length`
            frames), which the checkpoint was trained with; `"paper"` retrieves the frame nearest to the centroid of
            each of the largest clusters (paper Alg. 3).
        memory_seed (`int`, defaults to 0): seed of the k-means generator of every new memory.
    """

    model_type = "flash_vstream"
    # Outputs that `Trainer.evaluate`/`predict` must not gather as logits: the caches are objects, not tensors,
    # and the read-out has the memory's batch, not the text batch.
    keys_to_ignore_at_inference = ["cache", "past_key_values", "video_memory", "video_hidden_states"]
    attribute_map = {"video_token_index": "video_token_id"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", init_kwargs=CLIP_VIT_L14_224
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=VICUNA_7B),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    video_token_id: int = 32000
    vision_feature_layer: int = -2
    projector_hidden_act: str = "gelu"
    spatial_pool_size: int = 8
    temporal_pool_size: int = 4
    abstract_pool_size: int = 1
    spatial_length: int = 1
    temporal_length: int = 25
    abstract_length: int = 25
    retrieved_length: int = 3
    abstract_update_ratio: float = 0.2
    abstract_hidden_size: int = 32
    kmeans_max_iter: int = 10
    kmeans_tol: float = 1e-4
    retrieval_mode: Literal["original", "paper"] = "original"
    memory_seed: int = 0
    tie_word_embeddings: bool = False

    @property
    def patch_grid_size(self) -> int:
        """Side `g` of the vision tower's patch grid (16 for ViT-L/14 at 224 px)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_star_memory()

    def check_star_memory(self) -> None:
        """Raise a `ValueError` naming the first STAR field that does not describe a memory that can be built.

        Run at construction and again by the model, so fields changed after construction are checked too.
        """
        grid = self.patch_grid_size
        if self.spatial_pool_size < 1 or grid % self.spatial_pool_size:
            raise ValueError(
                f"spatial_pool_size must divide the {grid}x{grid} patch grid "
                f"(image_size {self.vision_config.image_size} // patch_size {self.vision_config.patch_size}), "
                f"got {self.spatial_pool_size}"
            )
        for field in ("temporal_pool_size", "abstract_pool_size"):
            size = getattr(self, field)
            if size < 1 or self.spatial_pool_size % size:
                raise ValueError(
                    f"{field} must divide spatial_pool_size ({self.spatial_pool_size}), since it pools the "
                    f"spatial tokens; got {size}"
                )
        for field in ("spatial_length", "temporal_length", "abstract_length", "retrieved_length"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        if not 0.0 <= self.abstract_update_ratio <= 1.0:
            raise ValueError(f"abstract_update_ratio must be in [0, 1], got {self.abstract_update_ratio}")
        if self.abstract_hidden_size < 1:
            raise ValueError(f"abstract_hidden_size must be >= 1, got {self.abstract_hidden_size}")
        if self.kmeans_max_iter < 1:
            raise ValueError(f"kmeans_max_iter must be >= 1, got {self.kmeans_max_iter}")
        if self.kmeans_tol < 0:
            raise ValueError(f"kmeans_tol must be >= 0, got {self.kmeans_tol}")
        if self.retrieval_mode not in RETRIEVAL_MODES:
            raise ValueError(f"retrieval_mode must be one of {RETRIEVAL_MODES}, got {self.retrieval_mode!r}")
        num_layers = self.vision_config.num_hidden_layers
        if not -(num_layers + 1) <= self.vision_feature_layer <= num_layers:
            raise ValueError(
                f"vision_feature_layer must index one of the {num_layers + 1} vision hidden states, "
                f"got {self.vision_feature_layer}"
            )


__all__ = ["FlashVStreamConfig"]
