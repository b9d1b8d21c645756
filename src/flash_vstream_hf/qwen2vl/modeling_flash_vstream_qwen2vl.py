"""Flash-VStream v2 (Flash-VStream-Qwen): transformers' Qwen2-VL with a Flash Memory between ViT and merger.

A video's frames go through Qwen2-VL's own vision tower at full resolution and, 2x2-pooled in pixel space, at
low resolution (one ViT pass for both). Before the patch merger the Flash Memory keeps a Context Synopsis Memory
(CSM: k-means centroids of the low-resolution temporal patches) and a Detail Augmentation Memory (DAM: the
full-resolution temporal patches nearest the heaviest centroids); the merger turns `[DAM | CSM]` into the tokens
that replace the video's placeholders. The memory maths is in `flash_memory.py`, the positions in
`rope_flash_vstream_qwen2vl.py`; everything else is transformers' Qwen2-VL.

The weights are Qwen2-VL's, with Qwen2-VL's names: a checkpoint saved by the original (transformers 4.45 names,
`model.layers.*`, `visual.*`, `lm_head`) loads directly through transformers' own Qwen2-VL key mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
    Qwen2VLPreTrainedModel,
)

from .configuration_flash_vstream_qwen2vl import FlashVStreamQwen2VLConfig
from .flash_memory import (
    context_synopsis_memory,
    csm_grid,
    dam_grid,
    detail_augmentation_memory,
    pool_patches_in_pixel_space,
)
from .quantization_flash_vstream_qwen2vl import with_default_skip_modules
from .rope_flash_vstream_qwen2vl import apply_memory_positions, memory_relative_positions, placeholder_rope_index


@dataclass
class FlashVStreamQwen2VLVideoOutput(BaseModelOutputWithPooling):
    r"""
    What `get_video_features` returns: each video's memory as the language model sees it.

    pooler_output (`tuple[torch.FloatTensor]`): per video, `[n_tokens, text_hidden_size]`, DAM tokens then CSM
        tokens, what replaces the video's placeholders.
    memory_position_ids (`tuple[torch.LongTensor]`): per video, `[n_tokens, 3]` AM-RoPE (t, h, w) positions of
        those tokens relative to the video's first position.
    """

    memory_position_ids: tuple[torch.LongTensor, ...] | None = None


class FlashVStreamQwen2VLPreTrainedModel(Qwen2VLPreTrainedModel):
    config: FlashVStreamQwen2VLConfig
    config_class = FlashVStreamQwen2VLConfig
    # One device each (with Qwen2-VL's vision block and decoder layer): the merger turns the memory into tokens.
    _no_split_modules = ["Qwen2VLVisionBlock", "Qwen2VLDecoderLayer", "PatchMerger"]  # noqa: RUF012
    # Modules bitsandbytes leaves unquantized unless `llm_int8_skip_modules` is given: the vision tower and its
    # merger (the Flash Memory clusters their features). Full names from this class's root, matched from the start.
    quantization_skip_modules: tuple[str, ...] = ("visual",)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; a bitsandbytes `quantization_config` without `llm_int8_skip_modules`
        quantizes only the language model (see `quantization_skip_modules`)."""
        if kwargs.get("quantization_config") is not None:
            kwargs["quantization_config"] = with_default_skip_modules(
                kwargs["quantization_config"], cls.quantization_skip_modules
            )
        return super().from_pretrained(*args, **kwargs)


class FlashVStreamQwen2VLModel(FlashVStreamQwen2VLPreTrainedModel, Qwen2VLModel):
    """Qwen2-VL whose videos are read through the Flash Memory (video only: images are not supported)."""

    def get_video_features(
        self,
        pixel_values_videos: torch.FloatTensor,
        video_grid_thw: torch.LongTensor | None = None,
        memory_generator: torch.Generator | None = None,
        **kwargs,
    ) -> FlashVStreamQwen2VLVideoOutput:
        r"""
        Build each video's Flash Memory and merge it into language-model tokens.

        pixel_values_videos (`torch.FloatTensor` of shape `(sum_i t_i * h_i * w_i, 3 * 2 * 14 * 14)`): Qwen2-VL
            video patch rows, every video resized to multiples of 56 px.
        video_grid_thw (`torch.LongTensor` of shape `(num_videos, 3)`): `(t, h, w)` patch grid of each video.
        memory_generator (`torch.Generator`, *optional*): draws the k-means initialisation; by default torch's
            global generator, as the original (seed it with `torch.manual_seed` for a reproducible memory).
        """
        if video_grid_thw is None:
            raise ValueError("video_grid_thw is required with pixel_values_videos (the processor returns both)")
        vision = self.config.vision_config
        pool = vision.low_resolution_pool
        grids = [tuple(grid) for grid in video_grid_thw.tolist()]
        pixels = pixel_values_videos.type(self.visual.dtype)
        full_rows = torch.split(pixels, [t * h * w for t, h, w in grids])

        # One ViT pass over [full-resolution videos..., low-resolution videos...], as the original.
        if pool > 1:
            low = [
                pool_patches_in_pixel_space(rows, grid, vision.in_channels, pool)
                for rows, grid in zip(full_rows, grids)
            ]
            low_grids = [low_grid for _, low_grid in low]
            vision_input = torch.cat([*full_rows, *(rows for rows, _ in low)])
            vision_grids = torch.tensor(grids + low_grids, device=video_grid_thw.device)
        else:
            low_grids = grids
            vision_input, vision_grids = pixels, video_grid_thw
        features = self.visual(vision_input, grid_thw=vision_grids).last_hidden_state  # [rows, embed_dim]
        per_video = torch.split(features, [t * h * w for t, h, w in grids + (low_grids if pool > 1 else [])])
        full_features, low_features = per_video[: len(grids)], per_video[len(grids) :] if pool > 1 else per_video

        tokens, positions = [], []
        for full, low_rows, grid, low_grid in zip(full_features, low_features, grids, low_grids):
            full = full.reshape(grid[0], grid[1] * grid[2], -1)  # [t, h * w, D]
            low_rows = low_rows.reshape(low_grid[0], low_grid[1] * low_grid[2], -1)  # [t, h' * w', D]
            synopsis = context_synopsis_memory(low_rows, vision.num_csm_clusters, generator=memory_generator)
            detail, detail_positions = detail_augmentation_memory(full, low_rows, synopsis, vision.num_dam_patches)
            memory = torch.cat([detail.reshape(-1, detail.shape[-1]), synopsis.features.reshape(-1, detail.shape[-1])])
            tokens.append(self.visual.merger(memory))  # [n_tokens, text_hidden]
            positions.append(
                memory_relative_positions(
                    detail_positions,
                    dam_grid(grid, vision.num_dam_patches),
                    synopsis.positions,
                    csm_grid(grid, vision.num_csm_clusters, pool),
                )
            )
        return FlashVStreamQwen2VLVideoOutput(pooler_output=tuple(tokens), memory_position_ids=tuple(positions))

    def memory_grids(self, video_grid_thw: torch.LongTensor) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """Per video, the `(DAM, CSM)` patch grids its memory has."""
        vision = self.config.vision_config
        return [
            (
                dam_grid(tuple(grid), vision.num_dam_patches),
                csm_grid(tuple(grid), vision.num_csm_clusters, vision.low_resolution_pool),
            )
            for grid in video_grid_thw.tolist()
        ]

    def get_rope_index(
        self,
        input_ids: torch.LongTensor,
        mm_token_type_ids: torch.IntTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Placeholder-layout position ids `[3, batch, seq]` and `rope_deltas` `[batch, 1]` (the original's
        `get_rope_index`; see `rope_flash_vstream_qwen2vl.py`). The AM-RoPE rewrite of the memory tokens happens
        in `forward`, once the memory is known."""
        if image_grid_thw is not None:
            raise ValueError("Flash-VStream-Qwen reads videos only; got image_grid_thw")
        grids = self.memory_grids(video_grid_thw) if video_grid_thw is not None else None
        return placeholder_rope_index(input_ids, self.config.video_token_id, grids, attention_mask)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        mm_encoder_outputs: dict | None = None,
        visual_position_ids: torch.LongTensor | None = None,
        memory_generator: torch.Generator | None = None,
        **kwargs,
    ):
        r"""
        As `Qwen2VLModel.forward`, with each video read through its Flash Memory. Position ids are worked out here
        when not given (the placeholder layout, from `input_ids`, `attention_mask` and `video_grid_thw`); the
        memory tokens' positions are always rewritten to their AM-RoPE positions once the memory is built.

        visual_position_ids (`torch.LongTensor`, *optional*): accepted for the original's processor output and
            ignored: the video tokens are found in `input_ids`.
        memory_generator (`torch.Generator`, *optional*): see `get_video_features`.
        """
        if pixel_values is not None or image_grid_thw is not None:
            raise ValueError("Flash-VStream-Qwen reads videos only: pass pixel_values_videos, not pixel_values")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past_length = cache.get_seq_length() if cache is not None else 0

        mm_encoder_outputs = dict(mm_encoder_outputs or {})
        if pixel_values_videos is not None:
            if mm_encoder_outputs.get("video") is not None:
                raise ValueError("pass either pixel_values_videos or mm_encoder_outputs['video'], not both")
            mm_encoder_outputs["video"] = self.get_video_features(
                pixel_values_videos, video_grid_thw, memory_generator=memory_generator
            )
        video = mm_encoder_outputs.get("video")

        if position_ids is None and input_ids is None and past_length == 0:
            # A new prompt given as embeddings: no placeholders, so text positions. Qwen2-VL would shift them by the
            # `rope_deltas` a previous prompt left (of another batch size, even), so they are dropped first.
            self.rope_deltas = None
        if position_ids is None and input_ids is not None and past_length == 0:
            position_ids, self.rope_deltas = self.get_rope_index(
                input_ids, video_grid_thw=video_grid_thw if video is not None else None, attention_mask=attention_mask
            )
        if video is not None:
            if input_ids is None or position_ids is None:
                raise ValueError("a video needs input_ids (to find its placeholders) and video_grid_thw")
            position_ids = apply_memory_positions(
                position_ids, input_ids, self.config.video_token_id, video.memory_position_ids
            )
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            mm_encoder_outputs=mm_encoder_outputs or None,
            **kwargs,
        )


class FlashVStreamQwen2VLForConditionalGeneration(FlashVStreamQwen2VLPreTrainedModel, Qwen2VLForConditionalGeneration):
    """Flash-VStream v2: answers questions about a video read through its Flash Memory. `generate()` works as for
    Qwen2-VL (greedy, sampling, beam search, streamers): the memory is built once, before prefill, and shared by
    every beam and returned sequence."""

    quantization_skip_modules = ("model.visual", "lm_head")

    def __init__(self, config: FlashVStreamQwen2VLConfig):
        # Qwen2VLForConditionalGeneration.__init__ with the Flash Memory model in place of Qwen2VLModel.
        Qwen2VLPreTrainedModel.__init__(self, config)
        self.model = FlashVStreamQwen2VLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_rope_index(self, *args, **kwargs):
        return self.model.get_rope_index(*args, **kwargs)

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        # Overridden: the placeholder layout needs no `mm_token_type_ids`; rows are [text, t, h, w] as Qwen2-VL's.
        text_positions = GenerationMixin._prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs)
        cache = model_kwargs.get("cache", model_kwargs.get("past_key_values"))
        past_length = cache.get_seq_length() if cache is not None else 0
        video_grid_thw = model_kwargs.get("video_grid_thw")
        if past_length and self.model.rope_deltas is not None and video_grid_thw is None:
            return text_positions[None, ...] + self.model.rope_deltas
        input_ids = model_kwargs.get("input_ids", inputs_tensor)
        if input_ids.ndim == 2 and input_ids.dtype in (torch.int, torch.long):
            rope_positions, rope_deltas = self.model.get_rope_index(
                input_ids, video_grid_thw=video_grid_thw, attention_mask=model_kwargs.get("attention_mask")
            )
        else:  # prompt given as inputs_embeds: no placeholders to lay out
            rope_positions = text_positions.unsqueeze(0).expand(3, -1, -1)
            rope_deltas = torch.zeros(text_positions.shape[0], 1, dtype=torch.long, device=text_positions.device)
        self.model.rope_deltas = rope_deltas
        return torch.cat([text_positions[None, ...], rope_positions.to(text_positions)], dim=0)

    def _expand_multimodal_outputs(self, input_ids, mm_encoder_output, expand_size=1, inputs_embeds=None):
        # Overridden: the memory's AM-RoPE positions are expanded for beams / returned sequences with its tokens
        # (they have one row per token, so transformers' own grouping applies to them unchanged).
        video = mm_encoder_output.get("video")
        positions = getattr(video, "memory_position_ids", None)
        mm_encoder_output = super()._expand_multimodal_outputs(input_ids, mm_encoder_output, expand_size, inputs_embeds)
        if positions is not None:
            shadow = {"video": BaseModelOutputWithPooling(pooler_output=positions)}
            super()._expand_multimodal_outputs(input_ids, shadow, expand_size, inputs_embeds)
            video.memory_position_ids = shadow["video"].pooler_output
        return mm_encoder_output

    def save_pretrained(self, save_directory, *args, save_original_format: bool = False, **kwargs):
        """As `PreTrainedModel.save_pretrained`, writing the transformers 5 layout (`model.language_model.*`,
        `model.visual.*`) by default: transformers would otherwise revert to the 4.45 names it loaded from."""
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)


# Checkpoints of the original (transformers 4.45 names) load through transformers' own Qwen2-VL key mapping.
for _ours, _theirs in (
    ("FlashVStreamQwen2VLForConditionalGeneration", "Qwen2VLForConditionalGeneration"),
    ("FlashVStreamQwen2VLModel", "Qwen2VLModel"),
):
    register_checkpoint_conversion_mapping(_ours, get_checkpoint_conversion_mapping(_theirs), overwrite=True)


__all__ = [
    "FlashVStreamQwen2VLForConditionalGeneration",
    "FlashVStreamQwen2VLModel",
    "FlashVStreamQwen2VLPreTrainedModel",
]
