"""Flash-VStream model: CLIP vision tower -> STAR memory -> MLP projector -> Llama, as a transformers 5 model.

The frame handler is `update_memory` (vision tower + memory consolidation, no language model work); the
question handler is `forward`/`generate` with `video_memory=`, which fills the `<video>` placeholder tokens with
the projected memory read-out. Passing `pixel_values_videos` instead builds a fresh memory from all the frames.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils.generic import can_return_tuple

from .abstract_memory_attention import FlashVStreamAbstractMemoryAttention
from .configuration_flash_vstream import FlashVStreamConfig
from .device_flash_vstream import execution_device, floating_dtype
from .memory_flash_vstream import FlashVStreamMemory, VideoMemory
from .quantization_flash_vstream import with_default_skip_modules
from .star_memory import StarLayout, consolidate, empty_state, pool_spatial, read_out
from .transformers_compat import cache_kwargs, output_cache, resolve_cache


# The output classes extend transformers' own, so the text KV cache field has the name of the installed release
# (`past_key_values` up to 5.23, `cache` from 5.24) and reading it by the other name works as for any model.
@dataclass
class FlashVStreamModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    video_memory (`FlashVStreamMemory` or a list of them, *optional*): the memory the placeholders were filled
        from, updated with `pixel_values_videos` if those were given; one memory per sample (`None` for a
        text-only one) when the videos of a batch have different lengths. Pass it back as `video_memory=`.
    video_hidden_states (`torch.FloatTensor` of shape `(memory_batch, num_video_tokens, hidden_size)`, *optional*):
        the projected memory read-out (a tuple of `(1, num_video_tokens_i, hidden_size)`, `None` for a text-only
        sample, with one memory per sample).
    """

    video_memory: VideoMemory | None = None
    video_hidden_states: torch.FloatTensor | tuple | None = None


@dataclass
class FlashVStreamCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    video_memory (`FlashVStreamMemory` or a list of them, *optional*): see `FlashVStreamModelOutputWithPast`.
    video_hidden_states (`torch.FloatTensor` or a tuple, *optional*): see `FlashVStreamModelOutputWithPast`.
    """

    video_memory: VideoMemory | None = None
    video_hidden_states: torch.FloatTensor | tuple | None = None


@dataclass
class FlashVStreamVideoOutput(BaseModelOutputWithPooling):
    r"""
    What `get_video_features` returns: the memory read-out as the language model sees it.

    last_hidden_state (`torch.FloatTensor` of shape `(memory_batch, num_video_tokens, vision_hidden_size)`):
        the read-out before the projector (`None` with one memory per sample).
    pooler_output (`torch.FloatTensor` of shape `(memory_batch, num_video_tokens, text_hidden_size)`): the
        projected read-out, what fills the `<video>` placeholders (a tuple of `(num_video_tokens_i,
        text_hidden_size)` tensors, `None` for a text-only sample, with one memory per sample).
    video_memory (`FlashVStreamMemory` or a list of them): the memory that was read.
    """

    video_memory: VideoMemory | None = None


# The forward arguments of `FlashVStreamModel` and `FlashVStreamForConditionalGeneration`, written once (transformers'
# `auto_docstring` only knows the arguments of its own models; these are documented here instead).
FORWARD_ARGS_DOCSTRING = r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, 3, H, W)`, *optional*): frames to add
            to `video_memory` (a fresh memory when it is `None`) before the placeholders are filled.
        video_frame_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 0 for the padding frames of
            a batch of videos of different lengths (the processor returns it).
        video_memory (`FlashVStreamMemory`, *optional*): the memory to answer from.
        cache (`Cache`, *optional*): the text KV cache.
        past_key_values (`Cache`, *optional*): its name before transformers 5.24 (deprecated from 5.24 on).
"""
LABELS_DOCSTRING = (
    "        labels (`torch.LongTensor` of shape `(batch, sequence_length)`, *optional*): targets for the LM loss;\n"
    "            `-100` (e.g. at placeholder positions) is ignored.\n"
)


def _documented(docstring: str):
    """Give a function `docstring` (applied under `can_return_tuple`, which copies it)."""

    def document(function):
        function.__doc__ = docstring
        return function

    return document


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


class FlashVStreamPreTrainedModel(PreTrainedModel):
    config: FlashVStreamConfig
    config_class = FlashVStreamConfig
    base_model_prefix = "model"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    # accelerate must not move the caches: the text KV cache (named after the release, see transformers_compat) and
    # the video memory, which follows the device of the modules that read it.
    _skip_keys_device_placement = ["cache", "past_key_values", "video_memory"]
    # One device each: the attention multiplies the outputs of its two projections; the projector is two small layers.
    _no_split_modules = ["FlashVStreamAbstractMemoryAttention", "FlashVStreamMultiModalProjector"]
    # Modules bitsandbytes leaves in the compute dtype unless `llm_int8_skip_modules` is given: only the language
    # model's linear layers are quantized. Full names from this class's root (matched from the start).
    quantization_skip_modules: tuple[str, ...] = ()
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: this model keeps to transformers' own conventions (init through `transformers.initialization` in
        its sub-models, parameter tying), so it is loaded as transformers' own models are. As custom code,
        weights missing from a checkpoint would skip the CLIP tower's own initialisation."""
        return False

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
    """Vision tower, STAR memory (with its learned abstract-memory attention), projector and Llama, no LM head.

    The STAR fields of the config are read when the model is built (`star_layout`), as transformers models read
    their sizes: build a new model to change them.
    """

    # Frames are run through the vision tower this many at a time, so a long offline video needs bounded RAM.
    vision_batch_size = 64
    quantization_skip_modules = ("vision_tower", "multi_modal_projector", "abstract_memory_attention")

    def __init__(self, config: FlashVStreamConfig):
        super().__init__(config)
        config.check_star_memory()
        # Built once: a forward pass must not rebuild it from the config (torch.compile cannot trace that).
        self.star_layout = StarLayout.from_config(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = FlashVStreamMultiModalProjector(config)
        self.abstract_memory_attention = FlashVStreamAbstractMemoryAttention(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

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
        return self._encode_frames(pixel_values_videos)[0]

    def _encode_frames(
        self, pixel_values_videos: torch.Tensor, output_attentions: bool = False, keep_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """Pooled features `[B, T, P_spa^2, D]` of valid frames, and the vision tower's own hidden states and
        attentions (per frame, `[B*T, g*g + 1, D]` each) when asked for."""
        size = self.config.vision_config.image_size
        if not isinstance(pixel_values_videos, torch.Tensor) or pixel_values_videos.dim() != 5:
            shape = (
                tuple(pixel_values_videos.shape) if hasattr(pixel_values_videos, "shape") else type(pixel_values_videos)
            )
            raise ValueError(f"pixel_values_videos must be a [batch, frames, 3, {size}, {size}] tensor, got {shape}")
        batch, frames, channels, height, width = pixel_values_videos.shape
        if frames < 1 or batch < 1:
            raise ValueError(
                f"pixel_values_videos must hold at least one frame, got shape {tuple(pixel_values_videos.shape)}"
            )
        if (channels, height, width) != (3, size, size):
            raise ValueError(
                f"pixel_values_videos frames must be [3, {size}, {size}], got {[channels, height, width]}; "
                "preprocess them with the model's processor"
            )
        dtype = floating_dtype(self.vision_tower, self.dtype)
        device = execution_device(self.vision_tower)
        pooled, hidden_states, attentions = [], [], []
        # chunks of frames, so a long offline video needs bounded RAM in the vision tower
        for chunk in pixel_values_videos.flatten(0, 1).split(self.vision_batch_size):
            outputs = self.vision_tower(
                chunk.to(device, dtype), output_hidden_states=True, output_attentions=output_attentions
            )
            patches = outputs.hidden_states[self.config.vision_feature_layer][:, 1:]  # [n, g*g, D]
            pooled.append(pool_spatial(patches, self.config.spatial_pool_size))
            if keep_hidden_states:
                hidden_states.append(outputs.hidden_states)
            if output_attentions:
                attentions.append(outputs.attentions)
        features = torch.cat(pooled).unflatten(0, (batch, frames))
        return features, _cat_layers(hidden_states), _cat_layers(attentions)

    @torch.no_grad()
    def update_memory(
        self,
        pixel_values_videos: torch.Tensor,
        video_memory: FlashVStreamMemory | None = None,
        video_frame_mask: torch.Tensor | None = None,
    ) -> VideoMemory:
        """Encode frames `[B, T, 3, H, W]` and add them to `video_memory` (a new memory when `None`).

        The memory object is updated in place (a new state is swapped in; snapshots are unaffected) and returned.
        With a `video_frame_mask` `[B, T]` (from the processor, 0 = padding frame) whose videos differ in length,
        a list of one fresh memory per sample is returned (see `encode_videos`).
        """
        return self.encode_videos(pixel_values_videos, video_frame_mask, video_memory)

    @torch.no_grad()
    def update_memory_from_features(
        self, frame_features: torch.Tensor, video_memory: FlashVStreamMemory | None = None
    ) -> FlashVStreamMemory:
        """Add precomputed vision features `[B, T, g*g, D]` (CLS dropped, as the original's feature files) or
        `[B, T, P_spa^2, D]` to `video_memory`, skipping the vision tower."""
        return self.add_frame_features(frame_features, video_memory)

    def add_frame_features(
        self, frame_features: torch.Tensor, video_memory: FlashVStreamMemory | None = None
    ) -> FlashVStreamMemory:
        """`update_memory_from_features` with gradients flowing when enabled (training through the memory)."""
        if frame_features.dim() != 4 or frame_features.shape[-1] != self.config.vision_config.hidden_size:
            raise ValueError(
                f"frame_features must be [batch, frames, tokens, {self.config.vision_config.hidden_size}], "
                f"got {tuple(frame_features.shape)}"
            )
        if frame_features.shape[-2] != self.star_layout.spatial_tokens:  # full patch grid: pool it once, here
            frame_features = pool_spatial(frame_features, self.config.spatial_pool_size)
        return self._add_frames(frame_features, video_memory)

    def encode_videos(
        self,
        pixel_values_videos: torch.Tensor,
        video_frame_mask: torch.Tensor | None = None,
        video_memory: FlashVStreamMemory | None = None,
        frame_features: torch.Tensor | None = None,
    ) -> VideoMemory:
        """Add the real frames of every video to a memory (gradients flow when enabled).

        Args:
            pixel_values_videos: `[B, T, 3, H, W]`.
            video_frame_mask: `[B, T]`, 1 for a real frame and 0 for padding (a batch of videos of different
                lengths, or a text-only sample with no frame at all). `None`: every frame is real.
            video_memory: the memory of `B` streams to add the frames to, or `None` for a fresh one.
            frame_features: `get_frame_features(pixel_values_videos)` when the caller already has it, so the
                vision tower does not run twice.
        Returns:
            `video_memory` updated, or a new memory of `B` streams when every video has the same number of real
            frames; otherwise a list of one new memory per sample, `None` for a sample without frames. A STAR
            memory holds streams that have all seen the same number of frames, so videos of different lengths
            cannot share one, and padding frames must never enter a memory as real ones.
        """
        encode = self.get_frame_features if frame_features is None else (lambda features: features)
        videos = self._real_frames(pixel_values_videos if frame_features is None else frame_features, video_frame_mask)
        if isinstance(videos, torch.Tensor):
            return self._add_frames(encode(videos), video_memory)
        if video_memory is not None:
            raise ValueError(
                "video_frame_mask marks videos of different lengths, which can only start new memories; "
                "add frames to an existing video_memory one stream length at a time"
            )
        return [None if video is None else self._add_frames(encode(video.unsqueeze(0)), None) for video in videos]

    @staticmethod
    def _real_frames(
        frames: torch.Tensor, video_frame_mask: torch.Tensor | None
    ) -> torch.Tensor | list[torch.Tensor | None]:
        """Frames `[B, T, ...]` (pixels or their features) -> `[B, T', ...]` when every sample has `T'` real
        frames, else one `[T_i, ...]` (or `None`) each."""
        if video_frame_mask is None:
            return frames
        if not isinstance(frames, torch.Tensor) or frames.dim() < 3:
            raise ValueError("pixel_values_videos must be a [batch, frames, 3, H, W] tensor")
        mask = torch.as_tensor(video_frame_mask).to(device=frames.device).bool()
        if mask.shape != frames.shape[:2]:
            raise ValueError(
                f"video_frame_mask must be [batch, frames] = {list(frames.shape[:2])}, got {list(mask.shape)}"
            )
        if bool(mask.all()):
            return frames
        videos = [video[keep] if bool(keep.any()) else None for video, keep in zip(frames, mask)]
        lengths = {0 if video is None else video.shape[0] for video in videos}
        if len(lengths) == 1 and 0 not in lengths:
            return torch.stack(videos)
        return videos

    def new_memory(
        self,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        seed: int | None = None,
    ) -> FlashVStreamMemory:
        """An empty memory for this model, on the vision tower's device and dtype unless told otherwise, its k-means
        generator seeded with `seed` (default: `config.memory_seed`)."""
        layout = self.star_layout if seed is None else dataclasses.replace(self.star_layout, memory_seed=seed)
        device = device if device is not None else execution_device(self.vision_tower)
        dtype = dtype if dtype is not None else floating_dtype(self.vision_tower, self.dtype)
        return FlashVStreamMemory(layout, empty_state(layout, batch_size, device, dtype))

    def check_memory(self, video_memory: FlashVStreamMemory) -> None:
        """Raise a `ValueError` if `video_memory` was built for another memory layout (its seed may differ)."""
        if not isinstance(video_memory, FlashVStreamMemory):
            raise ValueError(f"video_memory must be a FlashVStreamMemory, got {type(video_memory).__name__}")
        layout = self.star_layout
        if video_memory.layout != layout:  # dataclass equality first: cheap on the per-frame path
            differences = video_memory.layout.differences(layout, ignore=("memory_seed",))
            if differences:
                raise ValueError(
                    "video_memory was built for another model config (memory != model): " + "; ".join(differences)
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
        _check_finite(frames)
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

    def project_memory(self, video_memory: FlashVStreamMemory) -> torch.Tensor:
        """Projected memory read-out `[B, N, D_text]`: what fills the `<video>` placeholders (see `read_memory`)."""
        return self._project(self.read_memory(video_memory))

    def _project(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[B, N, D_vision] -> [B, N, D_text]` on the projector's device and dtype."""
        projector = self.multi_modal_projector
        return projector(tokens.to(execution_device(projector), floating_dtype(projector, tokens.dtype)))

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_frame_mask: torch.Tensor | None = None,
        video_memory: VideoMemory | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> FlashVStreamVideoOutput:
        """The video features the language model sees, as every transformers 5 multimodal model exposes them.

        Args:
            pixel_values_videos: `[B, T, 3, H, W]` frames, added to `video_memory` (a fresh one when `None`).
            video_frame_mask: `[B, T]`, 0 for padding frames (see `encode_videos`).
            video_memory: a memory to read (and to update, with frames).
        Returns:
            `FlashVStreamVideoOutput`: `pooler_output` `[B, N, D_text]` projected read-out, `last_hidden_state`
            `[B, N, D_vision]` read-out before projection, the `video_memory` read, and with
            `output_hidden_states` / `output_attentions` those of the vision tower for the frames given
            (`[B*T, g*g + 1, D_vision]` per layer; padding frames included).
        """
        if isinstance(pixel_values_videos, FlashVStreamMemory):
            raise TypeError("get_video_features takes frames first; pass a memory as video_memory=")
        hidden_states = attentions = None
        # as every transformers model: an unset flag follows the config (`config.output_hidden_states = True`)
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        if pixel_values_videos is not None:
            features = None
            if output_hidden_states or output_attentions:  # one vision pass gives both the features and these
                features, hidden_states, attentions = self._encode_frames(
                    pixel_values_videos, bool(output_attentions), bool(output_hidden_states)
                )
            video_memory = self.encode_videos(pixel_values_videos, video_frame_mask, video_memory, features)
        if video_memory is None:
            raise ValueError("get_video_features needs pixel_values_videos or a video_memory")
        vision = {"hidden_states": hidden_states, "attentions": attentions, "video_memory": video_memory}
        if isinstance(video_memory, FlashVStreamMemory):
            tokens = self.read_memory(video_memory)
            return FlashVStreamVideoOutput(last_hidden_state=tokens, pooler_output=self._project(tokens), **vision)
        per_sample = tuple(None if memory is None else self.project_memory(memory)[0] for memory in video_memory)
        return FlashVStreamVideoOutput(pooler_output=per_sample, **vision)

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """`[B, L]` True where the input holds the `<video>` placeholder."""
        if input_ids is not None:
            return input_ids == self.config.video_token_id
        video_embedding = self.get_input_embeddings()(
            torch.tensor(self.config.video_token_id, dtype=torch.long, device=inputs_embeds.device)
        )
        return (inputs_embeds == video_embedding).all(-1)

    def fill_placeholders(
        self, inputs_embeds: torch.Tensor, placeholders: torch.Tensor, video_memory: VideoMemory
    ) -> tuple[torch.Tensor, torch.Tensor | tuple]:
        """Write the projected memory into the placeholder positions of `inputs_embeds` `[B, L, D_text]`.

        Every sample holds either no placeholder or exactly as many as its memory gives tokens. A memory of batch
        `b` (or a list of `b` memories) serves `B / b` consecutive samples each: beam search and
        `num_return_sequences` expand the text batch, not the memory.

        Returns:
            the filled embeddings and the projected read-out (`video_hidden_states`).
        """
        features, lengths = self._memory_features(video_memory)  # [b, N_max, D_text], [b]
        batch, memory_batch = inputs_embeds.shape[0], features.shape[0]
        if batch % memory_batch:
            raise ValueError(f"video_memory holds {memory_batch} streams, which cannot serve a batch of {batch}")
        repeats = batch // memory_batch
        if not torch.compiler.is_compiling():  # a data-dependent check; compiled callers build prompts right
            self._check_placeholder_counts(placeholders, [n for n in lengths for _ in range(repeats)], video_memory)
        if features.shape[1] == 0:  # a memory that has seen no frame: nothing to fill
            return inputs_embeds, features
        features = features.repeat_interleave(repeats, dim=0).to(inputs_embeds.device, inputs_embeds.dtype)
        # The k-th placeholder of a sample takes the k-th memory token of that sample: a gather with static shapes
        # (no boolean indexing), so the same code serves any batch mix and compiles with fullgraph=True.
        position = (placeholders.long().cumsum(-1) - 1).clamp(0, features.shape[1] - 1)  # [B, L]
        gathered = features.gather(1, position.unsqueeze(-1).expand(-1, -1, features.shape[-1]))  # [B, L, D_text]
        filled = torch.where(placeholders.unsqueeze(-1).to(inputs_embeds.device), gathered, inputs_embeds)
        if isinstance(video_memory, FlashVStreamMemory):
            return filled, features[::repeats]
        return filled, tuple(None if n == 0 else f[None, :n] for f, n in zip(features[::repeats], lengths))

    def _memory_features(self, video_memory: VideoMemory) -> tuple[torch.Tensor, list[int]]:
        """Projected read-out of each stream, zero-padded to the longest: `[b, N_max, D_text]`, and each `N_i`."""
        if isinstance(video_memory, FlashVStreamMemory):
            features = self.project_memory(video_memory)
            return features, [features.shape[1]] * features.shape[0]
        memories = list(video_memory)
        if not memories or any(m is not None and not isinstance(m, FlashVStreamMemory) for m in memories):
            raise ValueError("video_memory must be a FlashVStreamMemory or a list of them (None for no video)")
        per_sample = [None if m is None else self.project_memory(m) for m in memories]  # [1, N_i, D_text]
        template = next(f for f in per_sample if f is not None) if any(f is not None for f in per_sample) else None
        if template is None:
            raise ValueError("the input holds <video> placeholders but no sample of video_memory has a video")
        lengths = [0 if f is None else f.shape[1] for f in per_sample]
        padded = template.new_zeros(len(memories), max(max(lengths), 1), template.shape[-1])
        for i, f in enumerate(per_sample):
            if f is not None:
                padded[i, : f.shape[1]] = f[0]
        return padded, lengths

    @staticmethod
    def _check_placeholder_counts(placeholders: torch.Tensor, expected: list[int], video_memory: VideoMemory) -> None:
        for sample, (found, wanted) in enumerate(zip(placeholders.sum(-1).tolist(), expected)):
            if found not in (0, wanted) or (found and not wanted):
                seen = video_memory.frames_seen if isinstance(video_memory, FlashVStreamMemory) else "its"
                raise ValueError(
                    f"sample {sample} has {found} <video> placeholder tokens but its video memory gives {wanted} "
                    f"tokens ({seen} frames seen); build the prompt with the processor from the same videos, or "
                    "processor(..., num_video_tokens=video_memory.get_seq_length())"
                )

    @can_return_tuple
    @_documented(FORWARD_ARGS_DOCSTRING)
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_frame_mask: torch.Tensor | None = None,
        video_memory: VideoMemory | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> tuple | FlashVStreamModelOutputWithPast:
        cache = resolve_cache(cache, past_key_values)
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if pixel_values_videos is not None:
            video_memory = self.encode_videos(pixel_values_videos, video_frame_mask, video_memory)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        placeholders = self.get_placeholder_mask(input_ids, inputs_embeds)
        video_hidden_states = None
        # Eagerly a memory is read only for placeholders (a decode step has none); compiled always (no data branch).
        if video_memory is not None and (torch.compiler.is_compiling() or bool(placeholders.any())):
            inputs_embeds, video_hidden_states = self.fill_placeholders(inputs_embeds, placeholders, video_memory)
        elif video_memory is None and not torch.compiler.is_compiling() and bool(placeholders.any()):
            raise ValueError(
                f"the input holds {int(placeholders.sum())} <video> placeholder tokens but neither "
                "video_memory nor pixel_values_videos was given"
            )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **cache_kwargs(cache),
            **kwargs,
        )
        return FlashVStreamModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_memory=video_memory,
            video_hidden_states=video_hidden_states,
            **cache_kwargs(output_cache(outputs)),
        )


def _cat_layers(chunks: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...] | None:
    """Per-layer outputs of the vision tower over frame chunks -> one tuple of per-layer tensors (None if empty)."""
    return tuple(torch.cat(layer) for layer in zip(*chunks)) if chunks else None


def _check_finite(frames: torch.Tensor) -> None:
    """Refuse frames `[B, T, P, D]` with NaN or inf features: one would poison the abstract memory for good
    (every later update mixes it in), and every later answer with it."""
    finite = torch.isfinite(frames).flatten(2).all(-1)  # [B, T]
    if not bool(finite.all()):
        stream, frame = (int(i) for i in (~finite).nonzero()[0])
        raise ValueError(
            f"frame {frame} of stream {stream} is not finite (NaN or inf in its pixels or vision features); "
            "the memory was not changed"
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
        self,
        pixel_values_videos: torch.Tensor,
        video_memory: FlashVStreamMemory | None = None,
        video_frame_mask: torch.Tensor | None = None,
    ) -> VideoMemory:
        """See `FlashVStreamModel.update_memory`."""
        return self.model.update_memory(pixel_values_videos, video_memory, video_frame_mask)

    def update_memory_from_features(
        self, frame_features: torch.Tensor, video_memory: FlashVStreamMemory | None = None
    ) -> FlashVStreamMemory:
        """See `FlashVStreamModel.update_memory_from_features`."""
        return self.model.update_memory_from_features(frame_features, video_memory)

    def add_frame_features(
        self, frame_features: torch.Tensor, video_memory: FlashVStreamMemory | None = None
    ) -> FlashVStreamMemory:
        """See `FlashVStreamModel.add_frame_features`."""
        return self.model.add_frame_features(frame_features, video_memory)

    @classmethod
    def sharing_modules_of(cls, model: FlashVStreamForConditionalGeneration, config: FlashVStreamConfig):
        """A model of `config` (another memory layout, say) that *shares* every module of `model`: training the
        one trains the other. A model reads its memory layout once, when it is built, so an ablation is a second
        model object around the same modules rather than a config change."""
        shared = cls(config)
        for name in ("vision_tower", "multi_modal_projector", "abstract_memory_attention", "language_model"):
            setattr(shared.model, name, getattr(model.model, name))
        shared.lm_head = model.lm_head
        shared.generation_config = model.generation_config
        return shared.train(model.training)

    def new_memory(self, batch_size: int = 1, **kwargs) -> FlashVStreamMemory:  # device, dtype, seed
        """See `FlashVStreamModel.new_memory`."""
        return self.model.new_memory(batch_size, **kwargs)

    def check_memory(self, video_memory: FlashVStreamMemory) -> None:
        """See `FlashVStreamModel.check_memory`."""
        self.model.check_memory(video_memory)

    def get_frame_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """See `FlashVStreamModel.get_frame_features`: pooled features `[B, T, P_spa^2, D]`, ready for
        `update_memory_from_features` (which does not pool them again)."""
        return self.model.get_frame_features(pixel_values_videos)

    def read_memory(self, video_memory: FlashVStreamMemory) -> torch.Tensor:
        """See `FlashVStreamModel.read_memory`."""
        return self.model.read_memory(video_memory)

    def project_memory(self, video_memory: FlashVStreamMemory) -> torch.Tensor:
        """See `FlashVStreamModel.project_memory`."""
        return self.model.project_memory(video_memory)

    def get_multi_modal_projector(self) -> nn.Module:
        """The projector from vision features to the language model's embeddings (`model.multi_modal_projector`)."""
        return self.model.multi_modal_projector

    def get_video_features(
        self,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_frame_mask: torch.Tensor | None = None,
        video_memory: VideoMemory | None = None,
        **kwargs,
    ) -> FlashVStreamVideoOutput | tuple:
        """See `FlashVStreamModel.get_video_features`."""
        return self.model.get_video_features(pixel_values_videos, video_frame_mask, video_memory, **kwargs)

    @can_return_tuple
    @_documented(FORWARD_ARGS_DOCSTRING + LABELS_DOCSTRING)
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_frame_mask: torch.Tensor | None = None,
        video_memory: VideoMemory | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> tuple | FlashVStreamCausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            pixel_values_videos=pixel_values_videos,
            video_frame_mask=video_frame_mask,
            video_memory=video_memory,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values),
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
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_memory=outputs.video_memory,
            video_hidden_states=outputs.video_hidden_states,
            **cache_kwargs(output_cache(outputs)),
        )

    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config=None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_memory: VideoMemory | None = None,
        video_frame_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """`GenerationMixin.generate` with a video memory.

        `pixel_values_videos` are added to `video_memory` (a fresh memory when `None`) once, before generation,
        so beam search and `num_return_sequences` share one memory instead of re-clustering a copy per beam.
        The `<video>` token is never generated.
        """
        if pixel_values_videos is not None:
            video_memory = self.update_memory(pixel_values_videos, video_memory, video_frame_mask)
        if video_memory is not None:
            kwargs["video_memory"] = video_memory
        generation_config = self._suppress_video_token(generation_config, kwargs)
        return super().generate(inputs, generation_config, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, *args, inputs_embeds=None, **kwargs) -> dict:
        """The generic inputs, without the video memory for a step whose tokens hold no `<video>` placeholder: with
        a KV cache, decode steps only see new tokens, so reading and projecting the whole memory for them would be
        wasted (as transformers drops `pixel_values_videos` after prefill)."""
        # `inputs_embeds` is named: generate() reads this signature to know that the model takes embeddings
        inputs = super().prepare_inputs_for_generation(input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)
        step_ids = inputs.get("input_ids")
        if step_ids is not None and not bool((step_ids == self.config.video_token_id).any()):
            inputs.pop("video_memory", None)
            inputs.pop("video_frame_mask", None)
        return inputs

    def _suppress_video_token(self, generation_config, kwargs: dict):
        """Add `<video>` to the suppressed tokens where the caller's settings live: in `kwargs` when no
        `generation_config` was given (or they already set `suppress_tokens`), else in a copy of the config, since
        transformers deprecates a `generation_config` combined with generation keyword arguments."""
        video_token = self.config.video_token_id
        if generation_config is None or "suppress_tokens" in kwargs:
            defaults = (generation_config or self.generation_config).suppress_tokens
            suppressed = list(kwargs.get("suppress_tokens", defaults) or [])
            if video_token not in suppressed:
                kwargs["suppress_tokens"] = [*suppressed, video_token]
            return generation_config
        suppressed = list(generation_config.suppress_tokens or [])
        if video_token not in suppressed:
            generation_config = copy.deepcopy(generation_config)
            generation_config.suppress_tokens = [*suppressed, video_token]
        return generation_config


__all__ = ["FlashVStreamModel", "FlashVStreamForConditionalGeneration", "FlashVStreamPreTrainedModel"]
