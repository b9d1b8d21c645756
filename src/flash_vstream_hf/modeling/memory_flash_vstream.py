"""`FlashVStreamMemory`: the STAR memory of one or more video streams, handled like `past_key_values`.

The memory lives for a whole stream, the text KV cache for one answer: `generate()` builds its own KV cache on
every call, so two questions never mix. The object holds an immutable `StarState`; an update builds the next
state and swaps it in, so a `snapshot()` taken by a reader stays consistent while another thread ingests.
"""

from __future__ import annotations

import os
import threading

import torch
import torch.utils._pytree as pytree

from .memory_file_flash_vstream import load_memory_file, save_memory_file
from .star_memory import StarLayout, StarState, empty_state


class FlashVStreamMemory:
    """Bounded, deterministic memory of `batch_size` video streams.

    Create it with `model.update_memory(pixel_values_videos)` (or `FlashVStreamMemory.from_config`), pass it
    back to `update_memory` for every new frame or batch of frames, and to `forward`/`generate` as
    `video_memory=` to ask about what it holds.

    Example:
        ```python
        memory = model.update_memory(frames)            # frames: [B, T, 3, H, W]
        memory = model.update_memory(next_frames, memory)
        inputs = processor(text=prompt, num_video_tokens=memory.get_seq_length(), return_tensors="pt")
        model.generate(**inputs, video_memory=memory)
        ```
    """

    def __init__(self, layout: StarLayout, state: StarState):
        self.layout = layout
        self._state = state
        self._update_lock = threading.Lock()

    # A lock cannot be copied or pickled; a copy gets a lock of its own (`copy.deepcopy` of the generation kwargs
    # in assisted decoding, `torch.export`, multiprocessing).
    def __getstate__(self) -> dict:
        return {"layout": self.layout, "state": self._state}

    def __setstate__(self, values: dict) -> None:
        self.__init__(values["layout"], values["state"])

    @classmethod
    def from_config(
        cls,
        config,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> FlashVStreamMemory:
        """An empty memory for a `FlashVStreamConfig`, its k-means generator seeded with `config.memory_seed`."""
        layout = StarLayout.from_config(config)
        return cls(layout, empty_state(layout, batch_size, device, dtype))

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def state(self) -> StarState:
        """The current immutable state (read it once and keep the reference for a consistent view)."""
        return self._state

    @property
    def update_lock(self) -> threading.Lock:
        """Held by `update_memory` while it builds the next state, so two writers cannot lose an update."""
        return self._update_lock

    def swap(self, state: StarState) -> None:
        """Install a new state (atomic for readers: they see the old or the new one, never a mix)."""
        self._state = state

    @property
    def frames_seen(self) -> int:
        return self._state.frames_seen

    @property
    def batch_size(self) -> int:
        return self._state.batch_size

    @property
    def device(self) -> torch.device:
        return self._state.current.device

    @property
    def dtype(self) -> torch.dtype:
        return self._state.current.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held by the memory; fixed by the layout, whatever the number of frames seen."""
        return self._state.nbytes

    def get_seq_length(self) -> int:
        """Number of memory tokens the language model sees (the number of `<video>` placeholders to use)."""
        return self.layout.num_tokens(self._state.frames_seen)

    def snapshot(self) -> FlashVStreamMemory:
        """A memory frozen at the current state; later updates of this one do not change it. No copy is made."""
        return FlashVStreamMemory(self.layout, self._state)

    def reset(self) -> None:
        """Forget every frame and re-seed the k-means generator, keeping batch size, device and dtype."""
        self.swap(empty_state(self.layout, self.batch_size, self.device, self.dtype))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> FlashVStreamMemory:
        """Move the memory (in place, like `nn.Module.to`); sizes stay float32 and the generator on CPU."""

        def move(name: str, tensor: torch.Tensor) -> torch.Tensor:
            if name == "generator_state":
                return tensor
            if name == "temporal_sizes" or dtype is None:
                return tensor.to(device)
            return tensor.to(device, dtype)

        self.swap(self._state.map_tensors(move))
        return self

    # -- batch operations, as on a transformers Cache -------------------------------------------------------

    def batch_select_indices(self, indices: torch.Tensor | list[int]) -> None:
        """Keep only the streams at `indices` (in that order)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.numel() and (index.min() < 0 or index.max() >= self.batch_size):
            raise IndexError(f"indices must be in [0, {self.batch_size}), got {index.tolist()}")
        self.swap(self._state.map_tensors(lambda name, t: t if name == "generator_state" else t[index.to(t.device)]))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the streams for beam search (same as `batch_select_indices`)."""
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every stream `repeats` times, e.g. to ask several samples about each stream."""
        self.swap(
            self._state.map_tensors(
                lambda name, t: t if name == "generator_state" else t.repeat_interleave(repeats, dim=0)
            )
        )

    @classmethod
    def stack(cls, memories: list[FlashVStreamMemory]) -> FlashVStreamMemory:
        """One memory of `sum(m.batch_size)` streams: the streams of `memories`, in order. The inputs are not changed.

        All must have the same layout (the seed aside), `frames_seen`, device and dtype: a memory holds one frame
        counter for all its streams, which fixes the token count of every stream. Streams that have seen different
        numbers of frames go to `generate` as a list instead (`video_memory=[a, b, ...]`, one memory per sample).
        The k-means generator state is the first memory's: the stack reads out exactly as its parts do, but adding
        frames to it draws k-means initialisations other than its parts would draw one by one.
        """
        memories = list(memories)
        if not memories or not all(isinstance(m, FlashVStreamMemory) for m in memories):
            found = [type(m).__name__ for m in memories]
            raise ValueError(f"memories must be a non-empty list of FlashVStreamMemory, got {found}")
        first = memories[0]
        states = [m.state for m in memories]  # read each state once: a consistent view of every input
        for index, (memory, state) in enumerate(zip(memories[1:], states[1:]), start=1):
            differences = memory.layout.differences(first.layout, ignore=("memory_seed",))
            if state.frames_seen != states[0].frames_seen:
                differences.append(f"frames_seen: {state.frames_seen} != {states[0].frames_seen}")
            if state.current.device != states[0].current.device:
                differences.append(f"device: {state.current.device} != {states[0].current.device}")
            if state.current.dtype != states[0].current.dtype:
                differences.append(f"dtype: {state.current.dtype} != {states[0].current.dtype}")
            if differences:
                raise ValueError(
                    f"cannot stack memory {index} with memory 0 (memory {index} != memory 0): " + "; ".join(differences)
                )
        parts = [state.tensors() for state in states]
        tensors = {
            name: tensor if name == "generator_state" else torch.cat([part[name] for part in parts])
            for name, tensor in parts[0].items()
        }
        return cls(first.layout, StarState(frames_seen=states[0].frames_seen, **tensors))

    # -- persistence --------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the memory to a safetensors file. The file is replaced atomically: a crash never leaves a
        half-written memory behind, and an existing file is only replaced by a complete one."""
        save_memory_file(path, self.layout, self._state)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> FlashVStreamMemory:
        """Read a memory written by `save`; a resumed stream continues exactly as the uninterrupted one.

        Every tensor, counter and value is checked first: a damaged or tampered file raises a `ValueError`
        naming what is wrong instead of being used.
        """
        layout, state = load_memory_file(path)
        memory = cls(layout, state)
        return memory.to(device) if device is not None else memory

    def __repr__(self) -> str:
        return (
            f"FlashVStreamMemory(batch_size={self.batch_size}, frames_seen={self.frames_seen}, "
            f"tokens={self.get_seq_length()}, nbytes={self.nbytes}, dtype={self.dtype}, device={self.device})"
        )


# What `video_memory=` takes: one memory of B streams, or one memory per sample (`None` for a sample without a
# video) when the videos of a batch have different lengths.
VideoMemory = FlashVStreamMemory | list[FlashVStreamMemory | None]


# A pytree node for torch.export and torch.compile: the state tensors are the leaves; the layout and the frame count
# (which fix every shape of the read-out) are the static context.
def _flatten_memory(memory: FlashVStreamMemory) -> tuple[list[torch.Tensor], tuple]:
    tensors = memory.state.tensors()
    return list(tensors.values()), (memory.layout, memory.frames_seen, tuple(tensors))


def _flatten_memory_with_keys(memory: FlashVStreamMemory) -> tuple[list, tuple]:
    leaves, context = _flatten_memory(memory)
    return [(pytree.MappingKey(name), leaf) for name, leaf in zip(context[2], leaves)], context


def _unflatten_memory(leaves, context: tuple) -> FlashVStreamMemory:
    layout, frames_seen, names = context
    return FlashVStreamMemory(layout, StarState(frames_seen=frames_seen, **dict(zip(names, leaves))))


pytree.register_pytree_node(
    FlashVStreamMemory,
    _flatten_memory,
    _unflatten_memory,
    serialized_type_name=f"{__name__}.FlashVStreamMemory",
    flatten_with_keys_fn=_flatten_memory_with_keys,
)
