"""Flash-VStream model: CLIP vision tower -> STAR memory -> MLP projector -> Llama, as a transformers 5 model.

The frame handler is `update_memory` (vision tower + memory consolidation, no language model work); the
question handler is `forward`/`generate` with `video_memory=`, which fills the `<video>` placeholder tokens with
the projected memory read-out. Passing `pixel_values_videos` instead builds a fresh memory from all the frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils.generic import can_return_tuple

from .configuration_flash_vstream import FlashVStreamConfig
from .memory_flash_vstream import FlashVStreamMemory
from .quantization_flash_vstream import execution_device, floating_dtype, with_default_skip_modules
from .star_memory import StarLayout, consolidate, empty_state, pool_spatial, read_out


@dataclass
class FlashVStreamModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    video_memory (`FlashVStreamMemory`, *optional*): the memory the placeholders were filled from, updated with
        `pixel_values_videos` if those were given. Pass it back as `video_memory=` like `past_key_values`.
    video_hidden_states (`torch.FloatTensor` of shape `(memory_batch, num_video_tokens, hidden_size)`, *optional*):
        the projected memory read-out.
    """

    video_memory: FlashVStreamMemory | None = None
    video_hidden_states: torch.FloatTensor | None = None


@dataclass
class FlashVStreamCausalLMOutputWithPast(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*): language modeling loss, when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`): next-token scores.
    past_key_values (`Cache`, *optional*): the text KV cache of this call.
    video_memory (`FlashVStreamMemory`, *optional*): see `FlashVStreamModelOutputWithPast`.
    video_hidden_states (`torch.FloatTensor`, *optional*): see `FlashVStreamModelOutputWithPast`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    video_memory: FlashVStreamMemory | None = None
    video_hidden_states: torch.FloatTensor | None = None


class FlashVStreamMultiModalProjector(nn.Module):
    """Token-wise 2-layer MLP from vision features to the language model's embedding space (`mlp2x_gelu`)."""

    def __init__(self, config: FlashVStreamConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`[..., D_vision] -> [..., D_text]`."""
        return self.linear_2(self.act(self.linear_1(features)))


class FlashVStreamAbstractMemoryAttention(nn.Module):
    """Semantic attention of the abstract-memory update (paper Alg. 2; `attention_model` in the original code).

    Only the query and key projections take part in the update: the original's value/output projections and
    layer norm are never used at inference and are not kept.
    """

    def __init__(self, config: FlashVStreamConfig):
        super().__init__()
        self.hidden_size = config.abstract_hidden_size
        self.q_proj = nn.Linear(config.vision_config.hidden_size, self.hidden_size)
        self.k_proj = nn.Linear(config.vision_config.hidden_size, self.hidden_size)

    def forward(self, memory: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Attention weights `softmax(q(M) k(X)^T / sqrt(h))`: `[B, M, D] x [B, X, D] -> [B, M, X]` float32,
        on the device of `memory` (the module itself may sit on another device under a `device_map`)."""
        dtype = floating_dtype(self, memory.dtype)
        device = execution_device(self)
        query = self.q_proj(memory.to(device, dtype)).float()  # scores in float32: fp16 q.k can overflow
        key = self.k_proj(frames.to(device, dtype)).float()
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.hidden_size)
        return scores.softmax(dim=-1).to(memory.device)


class FlashVStreamPreTrainedModel(PreTrainedModel):
    config: FlashVStreamConfig
    config_class = FlashVStreamConfig
    base_model_prefix = "model"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "video_memory"]
    # One device each: the attention multiplies the outputs of its two projections; the projector is two small layers.
    _no_split_modules = ["FlashVStreamAbstractMemoryAttention", "FlashVStreamMultiModalProjector"]
    # Modules bitsandbytes leaves in the compute dtype unless `llm_int8_skip_modules` is given: only the language
    # model's linear layers are quantized. Full names from this class's root (matched from the start).
    quantization_skip_modules: tuple[str, ...] = ()
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; a bitsandbytes `quantization_config` without `llm_int8_skip_modules`
        quantizes only the language model (see `quantization_skip_modules`)."""
        if kwargs.get("quantization_config") is not None:
            kwargs["quantization_config"] = with_default_skip_modules(
                kwargs["quantization_config"], cls.quantization_skip_modules
            )
        return super().from_pretrained(*args, **kwargs)


class FlashVStreamModel(FlashVStreamPreTrainedModel):
    """Vision tower, STAR memory (with its learned abstract-memory attention), projector and Llama, no LM head."""

    # Frames are run through the vision tower this many at a time, so a long offline video needs bounded RAM.
    vision_batch_size = 64
    quantization_skip_modules = ("vision_tower", "multi_modal_projector", "abstract_memory_attention")

    def __init__(self, config: FlashVStreamConfig):
        super().__init__(config)
        config.check_star_memory()
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = FlashVStreamMultiModalProjector(config)
        self.abstract_memory_attention = FlashVStreamAbstractMemoryAttention(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    @property
    def star_layout(self) -> StarLayout:
        return StarLayout.from_config(self.config)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    # -- frame handler ----------------------------------------------------------------------------------------

    def get_frame_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Vision features of every frame at spatial resolution.

        Args:
            pixel_values_videos: `[B, T, 3, H, W]` preprocessed frames, `T >= 1`.
        Returns:
            `[B, T, P_spa^2, D]`: hidden state `vision_feature_layer` without CLS, average-pooled to P_spa x P_spa.
        """
        size = self.config.vision_config.image_size
        if not isinstance(pixel_values_videos, torch.Tensor) or pixel_values_videos.dim() != 5:
            shape = tuple(pixel_values_videos.shape) if hasattr(pixel_values_videos, "shape") else type(pixel_values_videos)
            raise ValueError(f"pixel_values_videos must be a [batch, frames, 3, {size}, {size}] tensor, got {shape}")
        batch, frames, channels, height, width = pixel_values_videos.shape
        if frames < 1 or batch < 1:
            raise ValueError(f"pixel_values_videos must hold at least one frame, got shape {tuple(pixel_values_videos.shape)}")
        if (channels, height, width) != (3, size, size):
            raise ValueError(
                f"pixel_values_videos frames must be [3, {size}, {size}], got {[channels, height, width]}; "
                "preprocess them with the model's processor"
            )
        dtype = floating_dtype(self.vision_tower, self.dtype)
        device = execution_device(self.vision_tower)
        pooled = []
        for chunk in pixel_values_videos.flatten(0, 1).split(self.vision_batch_size):
            outputs = self.vision_tower(chunk.to(device, dtype), output_hidden_states=True)
            patches = outputs.hidden_states[self.config.vision_feature_layer][:, 1:]  # [n, g*g, D]
            pooled.append(pool_spatial(patches, self.config.spatial_pool_size))
        return torch.cat(pooled).unflatten(0, (batch, frames))

    @torch.no_grad()
    def update_memory(
        self, pixel_values_videos: torch.Tensor, video_memory: FlashVStreamMemory | None = None
    ) -> FlashVStreamMemory:
        """Encode frames `[B, T, 3, H, W]` and add them to `video_memory` (a new memory when `None`).

        The memory object is updated in place (a new state is swapped in; snapshots are unaffected) and returned.
        """
        return self._add_frames(self.get_frame_features(pixel_values_videos), video_memory)

    @torch.no_grad()
    def update_memory_from_features(
        self, frame_features: torch.Tensor, video_memory: FlashVStreamMemory | None = None
    ) -> FlashVStreamMemory:
        """Add precomputed vision features `[B, T, g*g, D]` (CLS dropped, as the original's feature files) or
        `[B, T, P_spa^2, D]` to `video_memory`, skipping the vision tower."""
        if frame_features.dim() != 4 or frame_features.shape[-1] != self.config.vision_config.hidden_size:
            raise ValueError(
                f"frame_features must be [batch, frames, tokens, {self.config.vision_config.hidden_size}], "
                f"got {tuple(frame_features.shape)}"
            )
        return self._add_frames(pool_spatial(frame_features, self.config.spatial_pool_size), video_memory)

    def new_memory(
        self, batch_size: int = 1, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> FlashVStreamMemory:
        """An empty memory for this model, on the vision tower's device and dtype unless told otherwise."""
        layout = self.star_layout
        device = device if device is not None else execution_device(self.vision_tower)
        dtype = dtype if dtype is not None else floating_dtype(self.vision_tower, self.dtype)
        return FlashVStreamMemory(layout, empty_state(layout, batch_size, device, dtype))

    def check_memory(self, video_memory: FlashVStreamMemory) -> None:
        """Raise a `ValueError` if `video_memory` was built for another memory layout."""
        if not isinstance(video_memory, FlashVStreamMemory):
            raise ValueError(f"video_memory must be a FlashVStreamMemory, got {type(video_memory).__name__}")
        layout = self.star_layout
        if video_memory.layout != layout:  # dataclass equality: cheap on the per-frame path
            raise ValueError(
                "video_memory was built for another model config (memory != model): "
                + "; ".join(video_memory.layout.differences(layout))
            )

    def _add_frames(self, frames: torch.Tensor, video_memory: FlashVStreamMemory | None) -> FlashVStreamMemory:
        """Consolidate spatial-resolution frames `[B, T, P_spa^2, D]` into the memory (gradients flow when enabled)."""
        if video_memory is None:
            video_memory = self.new_memory(frames.shape[0], frames.device, frames.dtype)
        self.check_memory(video_memory)
        if frames.shape[0] != video_memory.batch_size:
            raise ValueError(
                f"got frames for {frames.shape[0]} streams but video_memory holds {video_memory.batch_size}"
            )
        with video_memory.update_lock:
            state = video_memory.state
            frames = frames.to(state.current.device)
            video_memory.swap(consolidate(state, self.star_layout, frames, self.abstract_memory_attention))
        return video_memory

    # -- question handler ---------------------------------------------------------------------------------------

    def read_memory(self, video_memory: FlashVStreamMemory) -> torch.Tensor:
        """Memory read-out before projection: `[B, N, D_vision]` in the order
        `[abstract | temporal | retrieved | current]`, `N = video_memory.get_seq_length()`."""
        self.check_memory(video_memory)
        return read_out(video_memory.state, self.star_layout, self.abstract_memory_attention)

    def get_video_features(self, video_memory: FlashVStreamMemory) -> torch.Tensor:
        """Projected memory read-out `[B, N, D_text]` (see `read_memory`)."""
        tokens = self.read_memory(video_memory)
        projector = self.multi_modal_projector
        return projector(tokens.to(execution_device(projector), floating_dtype(projector, tokens.dtype)))

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """`[B, L]` True where the input holds the `<video>` placeholder."""
        if input_ids is not None:
            return input_ids == self.config.video_token_id
        video_embedding = self.get_input_embeddings()(
            torch.tensor(self.config.video_token_id, dtype=torch.long, device=inputs_embeds.device)
        )
        return (inputs_embeds == video_embedding).all(-1)

    def fill_placeholders(
        self, inputs_embeds: torch.Tensor, placeholders: torch.Tensor, video_memory: FlashVStreamMemory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the projected memory into the placeholder positions of `inputs_embeds` `[B, L, D_text]`.

        Every sample holds either no placeholder or exactly `video_memory.get_seq_length()` of them. A memory of
        batch 1 serves every sample; a memory of batch `b` serves `B / b` consecutive samples each (beam search,
        `num_return_sequences`).
        """
        expected = video_memory.get_seq_length()
        counts = placeholders.sum(-1)
        wrong = [(i, int(n)) for i, n in enumerate(counts.tolist()) if n not in (0, expected)]
        if wrong:
            sample, found = wrong[0]
            raise ValueError(
                f"sample {sample} has {found} <video> placeholder tokens but video_memory gives {expected} tokens "
                f"({video_memory.frames_seen} frames seen); build the prompt with "
                "processor(..., num_video_tokens=video_memory.get_seq_length())"
            )
        features = self.get_video_features(video_memory)  # [b, N, D_text]
        batch, memory_batch = inputs_embeds.shape[0], features.shape[0]
        if batch % memory_batch:
            raise ValueError(f"video_memory holds {memory_batch} streams, which cannot serve a batch of {batch}")
        features = features.repeat_interleave(batch // memory_batch, dim=0)[counts > 0]
        mask = placeholders.unsqueeze(-1).to(inputs_embeds.device)
        filled = inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.device, inputs_embeds.dtype))
        return filled, features

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_memory: FlashVStreamMemory | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> tuple | FlashVStreamModelOutputWithPast:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, 3, H, W)`, *optional*): frames to add
            to `video_memory` (a fresh memory when it is `None`) before the placeholders are filled.
        video_memory (`FlashVStreamMemory`, *optional*): the memory to answer from.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if pixel_values_videos is not None:
            video_memory = self._add_frames(self.get_frame_features(pixel_values_videos), video_memory)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        placeholders = self.get_placeholder_mask(input_ids, inputs_embeds)
        video_hidden_states = None
        if placeholders.any():
            if video_memory is None:
                raise ValueError(
                    f"the input holds {int(placeholders.sum())} <video> placeholder tokens but neither "
                    "video_memory nor pixel_values_videos was given"
                )
            inputs_embeds, video_hidden_states = self.fill_placeholders(inputs_embeds, placeholders, video_memory)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return FlashVStreamModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_memory=video_memory,
            video_hidden_states=video_hidden_states,
        )


class FlashVStreamForConditionalGeneration(FlashVStreamPreTrainedModel, GenerationMixin):
    """Flash-VStream with its language modeling head: ask questions about a video stream with `generate()`."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    quantization_skip_modules = (*(f"model.{name}" for name in FlashVStreamModel.quantization_skip_modules), "lm_head")

    def __init__(self, config: FlashVStreamConfig):
        super().__init__(config)
        self.model = FlashVStreamModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_decoder(self) -> nn.Module:
        return self.model.language_model

    @property
    def star_layout(self) -> StarLayout:
        return self.model.star_layout

    def update_memory(
        self, pixel_values_videos: torch.Tensor, video_memory: FlashVStreamMemory | None = None
    ) -> FlashVStreamMemory:
        """See `FlashVStreamModel.update_memory`."""
        return self.model.update_memory(pixel_values_videos, video_memory)

    def update_memory_from_features(
        self, frame_features: torch.Tensor, video_memory: FlashVStreamMemory | None = None
    ) -> FlashVStreamMemory:
        """See `FlashVStreamModel.update_memory_from_features`."""
        return self.model.update_memory_from_features(frame_features, video_memory)

    def new_memory(self, batch_size: int = 1, **kwargs) -> FlashVStreamMemory:
        """See `FlashVStreamModel.new_memory`."""
        return self.model.new_memory(batch_size, **kwargs)

    def get_video_features(self, video_memory: FlashVStreamMemory) -> torch.Tensor:
        """See `FlashVStreamModel.get_video_features`."""
        return self.model.get_video_features(video_memory)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_memory: FlashVStreamMemory | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> tuple | FlashVStreamCausalLMOutputWithPast:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, 3, H, W)`, *optional*): frames to add
            to `video_memory` (a fresh memory when it is `None`) before the placeholders are filled.
        video_memory (`FlashVStreamMemory`, *optional*): the memory to answer from.
        labels (`torch.LongTensor` of shape `(batch, sequence_length)`, *optional*): targets for the LM loss;
            `-100` (e.g. at placeholder positions) is ignored.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values_videos=pixel_values_videos,
            video_memory=video_memory,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return FlashVStreamCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_memory=outputs.video_memory,
            video_hidden_states=outputs.video_hidden_states,
        )

    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config=None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_memory: FlashVStreamMemory | None = None,
        **kwargs,
    ):
        """`GenerationMixin.generate` with a video memory.

        `pixel_values_videos` are added to `video_memory` (a fresh memory when `None`) once, before generation,
        so beam search and `num_return_sequences` share one memory instead of re-clustering a copy per beam.
        The `<video>` token is never generated.
        """
        if pixel_values_videos is not None:
            video_memory = self.update_memory(pixel_values_videos, video_memory)
        if video_memory is not None:
            kwargs["video_memory"] = video_memory
        config = generation_config if generation_config is not None else self.generation_config
        suppressed = list(kwargs.get("suppress_tokens", config.suppress_tokens) or [])
        if self.config.video_token_id not in suppressed:
            kwargs["suppress_tokens"] = [*suppressed, self.config.video_token_id]
        return super().generate(inputs, generation_config, **kwargs)


__all__ = ["FlashVStreamModel", "FlashVStreamForConditionalGeneration", "FlashVStreamPreTrainedModel"]
