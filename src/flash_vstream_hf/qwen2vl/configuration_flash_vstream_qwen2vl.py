"""Configuration of Flash-VStream v2 (Flash-VStream-Qwen): Qwen2-VL with a Flash Memory in its vision tower.

The config is transformers' own `Qwen2VLConfig` plus one field of the vision config, `flash_memory_config`: a
dict with the original's keys (`models/flash_memory_constants.py` of Flash-VStream-Qwen), so the `config.json`
of the released checkpoint (`zhang9302002/Flash-VStream-Qwen-7b`, saved by transformers 4.45) loads as it is.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig, Qwen2VLVisionConfig

try:  # in the package
    from flash_vstream_hf.modeling.transformers_compat import check_transformers_version
except ImportError:  # exported remote code: export-hub ships the same module beside this one
    from .transformers_compat import check_transformers_version

# Remote code has no compatibility guarantee across transformers releases: refuse an untested one up front.
check_transformers_version()

# The original's defaults, with the original's key names.
DEFAULT_FLASH_MEMORY_CONFIG = {
    # Token budget of the Context Synopsis Memory (CSM), counted in frames: K = temporal_length // 2 clusters of
    # temporal patches (a temporal patch is 2 frames), each at the low (2x2-pooled) resolution.
    "flash_memory_temporal_length": 120,
    # How the CSM is built: weighted k-means over temporal patches, clusters ordered by their mean time.
    "flash_memory_temporal_method": "kmeans_ordered",
    # Pixel-space pooling of the low-resolution copy of each frame (2: 2x2 average, 1: no low-resolution copy).
    "flash_memory_temporal_poolsize": 2,
    # Only read by the original's PCA variants of the CSM, which the released model does not use.
    "flash_memory_temporal_pca_dim": 32,
    # Budget of the Detail Augmentation Memory (DAM), in frames: S = spatial_length // 2 temporal patches kept at
    # full resolution.
    "flash_memory_spatial_length": 60,
    # How the DAM is chosen: for each of the S heaviest CSM clusters, the temporal patch nearest its centroid.
    "flash_memory_spatial_method": "klarge_retrieve",
    # Not the original's: how a *stream* (frames added one at a time, `model.new_memory()`) keeps its memory.
    # "bounded" (fixed size, whatever the stream's length) or "faithful" (the original's realtime update, which
    # keeps every frame's features: unbounded). See memory_flash_vstream_qwen2vl.py. Offline videos ignore it.
    "flash_memory_streaming_mode": "bounded",
}

TEMPORAL_METHODS = ("kmeans_ordered",)
STREAMING_MODES = ("bounded", "faithful")
SPATIAL_METHODS = ("klarge_retrieve",)


def check_flash_memory_config(flash_memory_config: dict) -> None:
    """Raise a `ValueError` naming the first field of `flash_memory_config` that cannot describe a memory."""
    unknown = set(flash_memory_config) - set(DEFAULT_FLASH_MEMORY_CONFIG)
    if unknown:
        raise ValueError(
            f"flash_memory_config has unknown keys {sorted(unknown)}; expected keys: {sorted(DEFAULT_FLASH_MEMORY_CONFIG)}"
        )
    for key in ("flash_memory_temporal_length", "flash_memory_spatial_length"):
        value = flash_memory_config[key]
        if not isinstance(value, int) or value < 0 or value % 2:
            raise ValueError(f"flash_memory_config[{key!r}] must be an even int >= 0 (frames), got {value!r}")
    if flash_memory_config["flash_memory_temporal_length"] == 0:
        raise ValueError("flash_memory_config['flash_memory_temporal_length'] must be > 0: the CSM cannot be empty")
    if flash_memory_config["flash_memory_temporal_poolsize"] not in (1, 2):
        raise ValueError(
            "flash_memory_config['flash_memory_temporal_poolsize'] must be 1 or 2, "
            f"got {flash_memory_config['flash_memory_temporal_poolsize']!r}"
        )
    if flash_memory_config["flash_memory_streaming_mode"] not in STREAMING_MODES:
        raise ValueError(
            f"flash_memory_config['flash_memory_streaming_mode'] must be one of {STREAMING_MODES}, "
            f"got {flash_memory_config['flash_memory_streaming_mode']!r}"
        )
    if flash_memory_config["flash_memory_temporal_method"] not in TEMPORAL_METHODS:
        raise ValueError(
            f"flash_memory_config['flash_memory_temporal_method'] must be one of {TEMPORAL_METHODS} (the method of "
            f"the released model), got {flash_memory_config['flash_memory_temporal_method']!r}"
        )
    if flash_memory_config["flash_memory_spatial_method"] not in SPATIAL_METHODS:
        raise ValueError(
            f"flash_memory_config['flash_memory_spatial_method'] must be one of {SPATIAL_METHODS} (the method of "
            f"the released model), got {flash_memory_config['flash_memory_spatial_method']!r}"
        )


@strict
class FlashVStreamQwen2VLVisionConfig(Qwen2VLVisionConfig):
    r"""
    Qwen2-VL vision tower config with the Flash Memory settings.

    Args:
        flash_memory_config (`dict`, *optional*): the Flash Memory, with the original's keys; missing keys take
            the released model's values:
            - `flash_memory_temporal_length` (120): CSM budget in frames, `K = 60` clusters of temporal patches.
            - `flash_memory_temporal_method` (`"kmeans_ordered"`): weighted k-means, clusters in time order.
            - `flash_memory_temporal_poolsize` (2): the CSM sees frames 2x2-average-pooled in pixel space.
            - `flash_memory_temporal_pca_dim` (32): unused by the released method, kept for round trips.
            - `flash_memory_spatial_length` (60): DAM budget in frames, `S = 30` full-resolution temporal patches.
            - `flash_memory_spatial_method` (`"klarge_retrieve"`): the patch nearest each heaviest centroid.
            - `flash_memory_streaming_mode` (`"bounded"`, not the original's): how a memory built frame by frame
              (`model.new_memory()`, `StreamingSession`) is kept: `"bounded"` (fixed size) or `"faithful"` (the
              original's realtime update, unbounded).
    """

    model_type = "flash_vstream_qwen2_vl_vision"

    flash_memory_config: dict | None = None

    def __post_init__(self, **kwargs):
        self.flash_memory_config = {**DEFAULT_FLASH_MEMORY_CONFIG, **(self.flash_memory_config or {})}
        check_flash_memory_config(self.flash_memory_config)
        # The pixel-space pooling and the Flash Memory's patch layout assume Qwen2-VL's patching, as the original does.
        for field, expected in (("patch_size", 14), ("temporal_patch_size", 2), ("spatial_merge_size", 2)):
            if kwargs.get(field, getattr(self, field)) != expected:
                raise ValueError(f"Flash Memory needs {field}={expected}, got {getattr(self, field)!r}")
        super().__post_init__(**kwargs)

    @property
    def image_size(self) -> int:
        """Side in pixels of the frames the streaming runtime prepares (448: the original's evaluation frames,
        `max_pixels = 4 * 224 * 224`); the processor's `min_pixels` / `max_pixels` decide the actual size."""
        return 448

    @property
    def num_csm_clusters(self) -> int:
        """K: temporal patches (or clusters of them) in the Context Synopsis Memory."""
        return self.flash_memory_config["flash_memory_temporal_length"] // 2

    @property
    def num_dam_patches(self) -> int:
        """S: full-resolution temporal patches in the Detail Augmentation Memory."""
        return self.flash_memory_config["flash_memory_spatial_length"] // 2

    @property
    def low_resolution_pool(self) -> int:
        """Side of the pixel-space average pool of the CSM's low-resolution copy (1: no pooling)."""
        return self.flash_memory_config["flash_memory_temporal_poolsize"]


@strict
class FlashVStreamQwen2VLConfig(Qwen2VLConfig):
    r"""
    Configuration of a [`FlashVStreamQwen2VLForConditionalGeneration`]: transformers' `Qwen2VLConfig` whose vision
    config carries the Flash Memory settings (see [`FlashVStreamQwen2VLVisionConfig`]). The defaults describe
    Qwen2-VL-7B with the released Flash Memory (60 CSM clusters, 30 DAM patches).

    A 4.45-era `config.json` (a flat diff dict, `rope_scaling={"type": "default", "mrope_section": [...]}`, a
    vision config with `model_type="qwen2_vl"`) loads unchanged.
    """

    model_type = "flash_vstream_qwen2_vl"
    sub_configs_defaults = {  # noqa: RUF012 (a transformers class attribute, read, never mutated)
        "vision_config": FlashVStreamQwen2VLVisionConfig,
        "text_config": Qwen2VLConfig.sub_configs_defaults["text_config"],
    }

    def __post_init__(self, **kwargs):
        if isinstance(self.vision_config, dict):
            # Saved by the original (4.45: "qwen2_vl") or by transformers' Qwen2-VL ("qwen2_vl_vision").
            self.vision_config = {**self.vision_config, "model_type": FlashVStreamQwen2VLVisionConfig.model_type}
        super().__post_init__(**kwargs)


__all__ = ["FlashVStreamQwen2VLConfig", "FlashVStreamQwen2VLVisionConfig"]
