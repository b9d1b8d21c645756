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

from collections.abc import Sequence
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
    MERGE_SIZE,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    context_synopsis_memory,
    csm_grid,
    dam_grid,
    detail_augmentation_memory,
    pool_patches_in_pixel_space,
)
from .memory_flash_vstream_qwen2vl import FlashVStreamQwen2VLMemory, MemoryLayout
from .quantization_flash_vstream_qwen2vl import with_default_skip_modules
from .rope_flash_vstream_qwen2vl import apply_memory_positions, memory_relative_positions, placeholder_rope_index

# One stream's memory, or one per batch row (questions about several streams in one generate).
VideoMemories = FlashVStreamQwen2VLMemory | Sequence[FlashVStreamQwen2VLMemory]


@dataclass
class FlashVStreamQwen2VLVideoOutput(BaseModelOutputWithPooling):
    r"""
    What `get_video_features` returns: each video's memory as the language model sees it.

    pooler_output (`tuple[torch.FloatTensor]`): per video, `[n_tokens, text_hidden_size]`, DAM tokens then CSM
        tokens, what replaces the video's placeholders.
    memory_position_ids (`tuple[torch.LongTensor]`): per video, `[n_tokens, 3]` AM-RoPE (t, h, w) positions of
        those tokens relative to the video's first position.
    memory_grids (`tuple`, *optional*): per video, the `(DAM, CSM)` patch grids, for the placeholder layout; set
        when the video was read from a `FlashVStreamQwen2VLMemory` (there is no `video_grid_thw` then).
    """

    memory_position_ids: tuple[torch.LongTensor, ...] | None = None
    memory_grids: tuple | None = None


@dataclass(frozen=True)
class FlashVStreamQwen2VLFrameFeatures:
    """What `get_frame_features` returns: per frame (one temporal patch each), the ViT features before the merger.

    full: `[B, T, h * w, D]` full-resolution features; low: `[B, T, h' * w', D]` low-resolution (2x2-pooled in
    pixel space) features; grid: `(h, w)` patch grid of the frames. Indexing `features[:, i:i + 1]` slices the
    batch and frame axes of both, as on a `[B, T, ...]` tensor.
    """

    full: torch.Tensor
    low: torch.Tensor
    grid: tuple[int, int]

    def __getitem__(self, index) -> FlashVStreamQwen2VLFrameFeatures:
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > 2 or any(not isinstance(i, slice) for i in index):
            raise IndexError("frame features take slices of the batch and frame axes only, e.g. features[:, i:i + 1]")
        return FlashVStreamQwen2VLFrameFeatures(self.full[index], self.low[index], self.grid)

    @property
    def shape(self) -> tuple[int, int]:
        """`(batch, frames)`."""
        return tuple(self.full.shape[:2])

    @classmethod
    def cat(cls, parts: list[FlashVStreamQwen2VLFrameFeatures]) -> FlashVStreamQwen2VLFrameFeatures:
        """The frames of `parts` (consecutive batches of one stream, one patch grid) as one, in order."""
        grids = {part.grid for part in parts}
        if len(grids) != 1:
            raise ValueError(f"frame features of one stream have one patch grid, got {sorted(grids)}")
        full = torch.cat([part.full for part in parts], dim=1)
        return cls(full, torch.cat([part.low for part in parts], dim=1), parts[0].grid)


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
        for video, (full, low_rows, grid, low_grid) in enumerate(zip(full_features, low_features, grids, low_grids)):
            full = full.reshape(grid[0], grid[1] * grid[2], -1)  # [t, h * w, D]
            low_rows = low_rows.reshape(low_grid[0], low_grid[1] * low_grid[2], -1)  # [t, h' * w', D]
            bad = first_non_finite_frame(full, low_rows)
            if bad is not None:
                raise ValueError(
                    f"temporal patch {bad} (frames {2 * bad} and {2 * bad + 1}) of video {video} is not finite "
                    "(NaN or inf in its pixels or vision features)"
                )
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

    # -- streaming: frame features and the memory read-out ---------------------------------------------------

    def get_frame_features(self, pixel_values: torch.Tensor) -> FlashVStreamQwen2VLFrameFeatures:
        """ViT features (before the merger) of each frame of `pixel_values` `[B, T, 3, H, W]` (preprocessed, `H`
        and `W` multiples of 56), each frame tiled to one 2-frame temporal patch, at full and low resolution."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
            shape = tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else type(pixel_values)
            raise ValueError(f"pixel_values must be a [batch, frames, 3, H, W] tensor, got {shape}")
        batch, frames, _, height, width = pixel_values.shape
        vision = self.config.vision_config
        factor = PATCH_SIZE * MERGE_SIZE * vision.low_resolution_pool
        if frames < 1 or height % factor or width % factor or not height or not width:
            raise ValueError(
                f"pixel_values must hold >= 1 frame of sides multiples of {factor} px, got "
                f"{tuple(pixel_values.shape)}: preprocess frames with the processor (preprocess_frames)"
            )
        h, w = height // PATCH_SIZE, width // PATCH_SIZE
        video = pixel_values.reshape(batch * frames, 3, height, width).repeat_interleave(TEMPORAL_PATCH_SIZE, dim=0)
        rows = patchify_frames(video.type(self.visual.dtype))  # [B * T * h * w, 3 * 2 * 14 * 14]
        grid = (batch * frames, h, w)
        pool = vision.low_resolution_pool
        if pool > 1:
            low_rows, low_grid = pool_patches_in_pixel_space(rows, grid, vision.in_channels, pool)
            vision_input = torch.cat([rows, low_rows])
            grids = torch.tensor([grid, low_grid], device=rows.device)
        else:
            vision_input, grids = rows, torch.tensor([grid], device=rows.device)
        features = self.visual(vision_input, grid_thw=grids).last_hidden_state  # [rows, D]
        full = features[: rows.shape[0]].reshape(batch, frames, h * w, -1)
        low = features[rows.shape[0] :] if pool > 1 else features
        low = low.reshape(batch, frames, (h // pool) * (w // pool), -1)
        return FlashVStreamQwen2VLFrameFeatures(full, low, (h, w))

    def read_memory(self, video_memory: VideoMemories) -> FlashVStreamQwen2VLVideoOutput:
        """Stream memories as the language model reads them: per memory, merged `[DAM | CSM]` tokens
        `[n_tokens, text_hidden]` with their AM-RoPE positions (the original's offline layout) and the grids of
        its placeholder layout. `video_memory` is one memory, or a sequence of them, one per batch row in row
        order (memories of different streams, at different lengths, each filling its own row's placeholders)."""
        tokens, positions, grids = [], [], []
        device, dtype = self.visual.device, self.visual.dtype
        for memory in as_memory_list(video_memory):
            out = memory.read_out()
            dim = out.csm_features.shape[-1]
            features = torch.cat([out.dam_features.reshape(-1, dim), out.csm_features.reshape(-1, dim)])
            tokens.append(self.visual.merger(features.to(device, dtype)))
            positions.append(
                memory_relative_positions(
                    out.dam_positions.to(device), out.dam_grid, out.csm_positions.to(device), out.csm_grid
                )
            )
            grids.append((out.dam_grid, out.csm_grid))
        return FlashVStreamQwen2VLVideoOutput(
            pooler_output=tuple(tokens), memory_position_ids=tuple(positions), memory_grids=tuple(grids)
        )

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
        memory_grids: list | tuple | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Placeholder-layout position ids `[3, batch, seq]` and `rope_deltas` `[batch, 1]` (the original's
        `get_rope_index`; see `rope_flash_vstream_qwen2vl.py`). The AM-RoPE rewrite of the memory tokens happens
        in `forward`, once the memory is known. `memory_grids` (per video, `(DAM, CSM)` grids) replaces
        `video_grid_thw` for a video read from a `FlashVStreamQwen2VLMemory`."""
        if image_grid_thw is not None:
            raise ValueError("Flash-VStream-Qwen reads videos only; got image_grid_thw")
        grids = self.memory_grids(video_grid_thw) if video_grid_thw is not None else None
        if memory_grids is not None:
            grids = list(memory_grids)
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
        video_memory: VideoMemories | None = None,
        **kwargs,
    ):
        r"""
        As `Qwen2VLModel.forward`, with each video read through its Flash Memory. Position ids are worked out here
        when not given (the placeholder layout, from `input_ids`, `attention_mask` and `video_grid_thw`); the
        memory tokens' positions are always rewritten to their AM-RoPE positions once the memory is built.

        visual_position_ids (`torch.LongTensor`, *optional*): accepted for the original's processor output and
            ignored: the video tokens are found in `input_ids`.
        memory_generator (`torch.Generator`, *optional*): see `get_video_features`.
        video_memory (`FlashVStreamQwen2VLMemory` or a sequence of them, *optional*): a stream's memory, read in
            place of `pixel_values_videos` (its tokens fill the one run of video placeholders), or one memory per
            batch row.
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
        if video_memory is not None:
            if pixel_values_videos is not None or mm_encoder_outputs.get("video") is not None:
                raise ValueError("pass either video_memory or pixel_values_videos / mm_encoder_outputs, not both")
            if input_ids is not None:
                check_one_memory_per_row(video_memory, input_ids.shape[0])
            mm_encoder_outputs["video"] = self.read_memory(video_memory)
        video = mm_encoder_outputs.get("video")

        if position_ids is None and input_ids is None and past_length == 0:
            # A new prompt given as embeddings: no placeholders, so text positions. Qwen2-VL would shift them by the
            # `rope_deltas` a previous prompt left (of another batch size, even), so they are dropped first.
            self.rope_deltas = None
        if position_ids is None and input_ids is not None and past_length == 0:
            position_ids, self.rope_deltas = self.get_rope_index(
                input_ids,
                video_grid_thw=video_grid_thw if video is not None else None,
                attention_mask=attention_mask,
                memory_grids=getattr(video, "memory_grids", None),
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
        video = (model_kwargs.get("mm_encoder_outputs") or {}).get("video")
        if input_ids.ndim == 2 and input_ids.dtype in (torch.int, torch.long):
            rope_positions, rope_deltas = self.model.get_rope_index(
                input_ids,
                video_grid_thw=video_grid_thw,
                attention_mask=model_kwargs.get("attention_mask"),
                memory_grids=getattr(video, "memory_grids", None),
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

    # -- streaming: the seam StreamingSession uses -------------------------------------------------------------

    def new_memory(
        self, batch_size: int = 1, seed: int | None = None, streaming_mode: str | None = None
    ) -> FlashVStreamQwen2VLMemory:
        """An empty stream memory for this model: `streaming_mode` `"bounded"` (fixed size) or `"faithful"` (the
        original's realtime update, unbounded), by default `flash_memory_config["flash_memory_streaming_mode"]`;
        its k-means generator seeded with `seed` (default 0). One stream per memory (`batch_size` must be 1)."""
        if batch_size != 1:
            raise ValueError(f"a Flash-VStream-Qwen memory holds one stream: batch_size must be 1, got {batch_size}")
        return FlashVStreamQwen2VLMemory(self.memory_layout(seed=seed, streaming_mode=streaming_mode))

    def memory_layout(self, seed: int | None = None, streaming_mode: str | None = None) -> MemoryLayout:
        vision = self.config.vision_config
        return MemoryLayout(
            streaming_mode=streaming_mode or vision.flash_memory_config["flash_memory_streaming_mode"],
            num_clusters=vision.num_csm_clusters,
            num_patches=vision.num_dam_patches,
            pool=vision.low_resolution_pool,
            seed=0 if seed is None else seed,
        )

    def check_memory(self, video_memory: VideoMemories) -> None:
        """Raise a `ValueError` if `video_memory` (one memory, or one per batch row) was built for another memory
        layout (its seed and mode may differ: both are choices of the memory, not of the model)."""
        for memory in as_memory_list(video_memory):
            differences = memory.layout.differences(self.memory_layout(), ignore=("seed", "streaming_mode"))
            if differences:
                raise ValueError(
                    "video_memory was built for another model config (memory != model): " + "; ".join(differences)
                )

    def get_frame_features(self, pixel_values: torch.Tensor) -> FlashVStreamQwen2VLFrameFeatures:
        """See `FlashVStreamQwen2VLModel.get_frame_features`."""
        return self.model.get_frame_features(pixel_values)

    @torch.no_grad()
    def update_memory_from_features(
        self, frame_features: FlashVStreamQwen2VLFrameFeatures, video_memory: FlashVStreamQwen2VLMemory | None = None
    ) -> FlashVStreamQwen2VLMemory:
        """Add the frames of `frame_features` (from `get_frame_features`, batch 1) to `video_memory` one by one
        (a new memory when `None`); the memory is updated in place (snapshots are unaffected) and returned."""
        if not isinstance(frame_features, FlashVStreamQwen2VLFrameFeatures):
            raise TypeError(f"frame_features must come from get_frame_features, got {type(frame_features).__name__}")
        if frame_features.full.shape[0] != 1:
            raise ValueError(f"a memory holds one stream: frame features must have batch 1, got {frame_features.shape}")
        video_memory = self.new_memory() if video_memory is None else video_memory
        self.check_memory(video_memory)
        bad = first_non_finite_frame(frame_features.full[0], frame_features.low[0])
        if bad is not None:  # checked before any frame is added: one would poison the centroids for good
            raise ValueError(
                f"frame {bad} is not finite (NaN or inf in its pixels or vision features); the memory was not changed"
            )
        for index in range(frame_features.full.shape[1]):
            video_memory.add_frame(frame_features.full[0, index], frame_features.low[0, index], frame_features.grid)
        return video_memory

    @torch.no_grad()
    def update_memory(
        self, pixel_values: torch.Tensor, video_memory: FlashVStreamQwen2VLMemory | None = None
    ) -> FlashVStreamQwen2VLMemory:
        """Encode preprocessed frames `[1, T, 3, H, W]` and add them to `video_memory` (a new one when `None`)."""
        return self.update_memory_from_features(self.get_frame_features(pixel_values), video_memory)

    def generate(self, *args, video_memory: VideoMemories | None = None, **kwargs):
        """`GenerationMixin.generate`; with `video_memory`, the memory's tokens fill the prompt's video
        placeholders (build it with `processor(text=..., num_video_tokens=video_memory.get_seq_length())`). A
        batch of questions about different streams takes one memory per row (`video_memory=[m_0, m_1, ...]`,
        prompts padded on the left): each row gives the answer it gives alone."""
        if video_memory is not None:
            if kwargs.get("pixel_values_videos") is not None:
                raise ValueError("pass either video_memory or pixel_values_videos, not both")
            self.check_memory(video_memory)
            input_ids = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs"))
            if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2:
                check_one_memory_per_row(video_memory, input_ids.shape[0])
            outputs = dict(kwargs.pop("mm_encoder_outputs", None) or {})
            if outputs.get("video") is not None:
                raise ValueError("pass either video_memory or mm_encoder_outputs['video'], not both")
            outputs["video"] = self.model.read_memory(video_memory)
            kwargs["mm_encoder_outputs"] = outputs
        return super().generate(*args, **kwargs)

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


def as_memory_list(video_memory: VideoMemories) -> list[FlashVStreamQwen2VLMemory]:
    """`video_memory` as a list of memories (one per batch row); a `TypeError` for anything else."""
    memories = [video_memory] if isinstance(video_memory, FlashVStreamQwen2VLMemory) else video_memory
    if not isinstance(memories, (list, tuple)) or not memories:
        raise TypeError(
            "video_memory must be a FlashVStreamQwen2VLMemory or a non-empty list of them (one per batch row), "
            f"got {type(video_memory).__name__}"
        )
    for memory in memories:
        if not isinstance(memory, FlashVStreamQwen2VLMemory):
            raise TypeError(f"video_memory must hold FlashVStreamQwen2VLMemory objects, got {type(memory).__name__}")
    return list(memories)


def check_one_memory_per_row(video_memory: VideoMemories, rows: int) -> None:
    """A list of memories must give one memory to each of the batch's `rows` (a single memory serves one row)."""
    if isinstance(video_memory, (list, tuple)) and len(video_memory) != rows:
        raise ValueError(
            f"video_memory holds {len(video_memory)} memories for {rows} rows of input_ids: one memory per row"
        )


def first_non_finite_frame(full: torch.Tensor, low: torch.Tensor) -> int | None:
    """Index of the first frame of `full` `[T, P, D]` or `low` `[T, P_low, D]` holding a NaN or inf, or `None`."""
    finite = torch.isfinite(full).flatten(1).all(-1) & torch.isfinite(low).flatten(1).all(-1)  # [T]
    return None if bool(finite.all()) else int((~finite).nonzero()[0])


def patchify_frames(video: torch.Tensor) -> torch.Tensor:
    """Qwen2-VL patch rows `[t * h * w, C * 2 * 14 * 14]` (merge order) of frames `[2t, C, H, W]`."""
    frames, channels, height, width = video.shape
    t, h, w = frames // TEMPORAL_PATCH_SIZE, height // PATCH_SIZE, width // PATCH_SIZE
    p, m = PATCH_SIZE, MERGE_SIZE
    x = video.reshape(t, TEMPORAL_PATCH_SIZE, channels, h // m, m, p, w // m, m, p)
    return x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * h * w, channels * TEMPORAL_PATCH_SIZE * p * p)


__all__ = [
    "FlashVStreamQwen2VLForConditionalGeneration",
    "FlashVStreamQwen2VLFrameFeatures",
    "FlashVStreamQwen2VLModel",
    "FlashVStreamQwen2VLPreTrainedModel",
]
