"""`FlashVStreamQwen2VLMemory`: the Flash Memory of one video stream, handled like `past_key_values`.

A stream enters frame by frame. Each frame is one temporal patch of Qwen2-VL's vision tower (the frame tiled to the
2 frames a temporal patch holds), as in the original's streaming path, where the processor tiles every 1-frame
clip; so `frames_seen` counts temporal patches, a frame is in the memory as soon as it is added, and a stream of
`n` frames corresponds to an offline video of `2n` frames, each frame twice. The memory holds, before the patch
merger, a Context Synopsis Memory (CSM: at most `K` weighted centroids of the frames' low-resolution ViT features,
with a time each) and what its Detail Augmentation Memory (DAM: full-resolution features of `S` frames) is read
from. The language model sees `[DAM | CSM]` (`read_out`), laid out with the original's offline AM-RoPE layout.

Two modes (`streaming_mode`):

- `"faithful"`: the original's realtime update (`embed_new_video_clip` of Flash-VStream-Qwen's
  `vstream_qwen2vl_realtime.py`): every update re-clusters the old CSM centroids (weighted by their cluster sizes)
  plus the new temporal patch into `K` centroids, so the CSM's times are the *ordinal* mean index of the members
  in that concatenation and stay in `0..K`; the DAM picks, for each of the `S` heaviest centroids, the frame
  nearest to it among *every frame seen*, at its absolute index. It keeps both feature maps of every frame, so
  it grows without bound (`nbytes` is linear in `frames_seen`), as the original does. Where the original's
  realtime path has bugs (the in-place write into an `expand()`ed view that collapses the question's t/h/w rows,
  1-D question positions, the `IndexError` of `generate(use_cache=False)`), the read-out follows its offline
  layout instead (`rope_flash_vstream_qwen2vl.py`): the memory tokens at their AM-RoPE positions, the text after
  them in 3-D positions after the placeholder block.
- `"bounded"` (the default): a fixed-size state, whatever the stream's length. The CSM is the same weighted
  k-means re-clustering of the `K` centroids plus the new patch (same random draws), but each centroid carries
  the weighted mean *absolute* temporal-patch index of its members (what the offline path's cluster times are)
  instead of an ordinal one; and instead of a feature bank, each centroid keeps one detail candidate: the
  full-resolution features (and low-resolution features, to compare) of the frame nearest to it among the
  candidates of the clusters it was merged from and the new frame. The DAM is the candidates of the `S` heaviest
  centroids, at their frames' absolute indices. It differs from the original only in which frame a centroid's
  detail comes from (the nearest of the candidates instead of the nearest of all frames) and in the CSM times
  (absolute instead of ordinal); up to `K` frames, both modes and the offline path give the same memory.
  How far the two modes' answers differ on the same streams is measured in docs/qwen2vl.md ("Streaming modes").

The object holds an immutable `MemoryState`; an update builds the next one and swaps it in, so a `snapshot()`
stays consistent while another thread ingests. k-means initialisation draws from a `torch.Generator` whose state
is part of the memory: the same frames with the same seed give a bit-identical memory, saved and loaded or not.
Distances and k-means run in float32; features are stored in the dtype they come in. Batch size is 1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass

import torch

from .configuration_flash_vstream_qwen2vl import STREAMING_MODES
from .flash_memory import (
    MERGE_SIZE,
    ContextSynopsis,
    cluster_timestamps,
    csm_grid,
    dam_grid,
    detail_augmentation_memory,
    euclidean_distances,
    weighted_kmeans,
)

try:  # in the package
    from flash_vstream_hf.modeling.safetensors_file import read_tensors, write_atomically
except ImportError:  # exported remote code: export-hub ships the same module beside this one
    from .safetensors_file import read_tensors, write_atomically

FILE_FORMAT = "flash_vstream_qwen2vl_memory"
FILE_VERSION = "1"
MAX_FRAMES_SEEN = 2**53


@dataclass(frozen=True)
class MemoryLayout:
    """What fixes the shapes of a memory: mode, `K` CSM entries, `S` DAM patches, the low-resolution pool, and
    the k-means seed (`seed` only decides the initial generator state)."""

    streaming_mode: str
    num_clusters: int
    num_patches: int
    pool: int
    seed: int

    def __post_init__(self):
        if self.streaming_mode not in STREAMING_MODES:
            raise ValueError(f"streaming_mode must be one of {STREAMING_MODES}, got {self.streaming_mode!r}")
        for name in ("num_clusters", "num_patches", "pool", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"memory layout field {name} must be an int >= 0, got {value!r}")
        if self.num_clusters < 1:
            raise ValueError(f"memory layout field num_clusters must be >= 1, got {self.num_clusters}")
        if self.pool not in (1, 2):
            raise ValueError(f"memory layout field pool must be 1 or 2, got {self.pool}")
        if self.num_patches > self.num_clusters:
            raise ValueError(
                f"the DAM reads one patch per CSM cluster: num_patches ({self.num_patches}) must be <= num_clusters "
                f"({self.num_clusters}) (flash_memory_spatial_length <= flash_memory_temporal_length)"
            )

    def differences(self, other: MemoryLayout, ignore: tuple[str, ...] = ()) -> list[str]:
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name not in ignore and getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True)
class MemoryState:
    """One stream's Flash Memory at one moment. `grid` is the `(h, w)` patch grid of the stream's frames (`(0, 0)`
    before the first). `csm_*`: `[k, P_low, D]` centroids, `[k]` float32 weights (frames per cluster), `[k]`
    float64 times. Faithful mode: `bank_full` / `bank_low`, a tuple of every frame's `[P_full, D]` / `[P_low, D]`
    features. Bounded mode: `detail_full [k, P_full, D]`, `detail_low [k, P_low, D]`, `detail_index [k]` (the frame
    index of each centroid's detail candidate)."""

    frames_seen: int
    grid: tuple[int, int]
    csm_features: torch.Tensor | None
    csm_weights: torch.Tensor | None
    csm_times: torch.Tensor | None
    generator_state: torch.Tensor
    bank_full: tuple[torch.Tensor, ...] = ()
    bank_low: tuple[torch.Tensor, ...] = ()
    detail_full: torch.Tensor | None = None
    detail_low: torch.Tensor | None = None
    detail_index: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state's tensors by name (the faithful bank stacked), as a memory file holds them."""
        names = ("csm_features", "csm_weights", "csm_times", "detail_full", "detail_low", "detail_index")
        out = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.bank_full:
            out["bank_full"] = torch.stack(self.bank_full)
            out["bank_low"] = torch.stack(self.bank_low)
        out["generator_state"] = self.generator_state
        return out

    @property
    def nbytes(self) -> int:
        tensors = [getattr(self, n) for n in ("csm_features", "csm_weights", "csm_times", "detail_full",
                                              "detail_low", "detail_index")]  # fmt: skip
        tensors = [t for t in tensors if t is not None] + list(self.bank_full) + list(self.bank_low)
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class MemoryReadOut:
    """What the language model reads: DAM `[n_dam, P_full, D]` at frame indices `[n_dam]`, CSM `[k, P_low, D]` at
    rounded times `[k]`, and their patch grids (for positions and the placeholder layout)."""

    dam_features: torch.Tensor
    dam_positions: torch.Tensor
    csm_features: torch.Tensor
    csm_positions: torch.Tensor
    dam_grid: tuple[int, int, int]
    csm_grid: tuple[int, int, int]


def _generator(state: torch.Tensor) -> torch.Generator:
    generator = torch.Generator()
    generator.set_state(state)
    return generator


def _seeded_state(seed: int) -> torch.Tensor:
    return torch.Generator().manual_seed(seed).get_state()


class FlashVStreamQwen2VLMemory:
    """Deterministic Flash Memory of one video stream (see the module docstring for the two modes).

    Make it with `model.new_memory()`, add frames with `model.update_memory(pixels, memory)` or
    `model.update_memory_from_features(model.get_frame_features(pixels), memory)`, and ask with
    `model.generate(**processor(text=..., num_video_tokens=memory.get_seq_length()), video_memory=memory)`.
    """

    def __init__(self, layout: MemoryLayout, state: MemoryState | None = None):
        self.layout = layout
        self._state = state if state is not None else self._empty_state(layout)
        self._update_lock = threading.Lock()

    @staticmethod
    def _empty_state(layout: MemoryLayout) -> MemoryState:
        return MemoryState(0, (0, 0), None, None, None, _seeded_state(layout.seed))

    def __getstate__(self) -> dict:
        return {"layout": self.layout, "state": self._state}

    def __setstate__(self, values: dict) -> None:
        self.__init__(values["layout"], values["state"])

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def state(self) -> MemoryState:
        return self._state

    @property
    def update_lock(self) -> threading.Lock:
        return self._update_lock

    def swap(self, state: MemoryState) -> None:
        self._state = state

    @property
    def streaming_mode(self) -> str:
        return self.layout.streaming_mode

    @property
    def frames_seen(self) -> int:
        """Frames (temporal patches) added so far."""
        return self._state.frames_seen

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def device(self) -> torch.device | None:
        return None if self._state.csm_features is None else self._state.csm_features.device

    @property
    def dtype(self) -> torch.dtype | None:
        return None if self._state.csm_features is None else self._state.csm_features.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of feature state held: fixed once `K` frames are in (bounded), linear in frames (faithful)."""
        return self._state.nbytes

    def grids(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """`(dam_grid, csm_grid)`: the patch grids of the memory the language model reads."""
        t, (h, w) = self._state.frames_seen, self._state.grid
        layout = self.layout
        return dam_grid((t, h, w), layout.num_patches), csm_grid((t, h, w), layout.num_clusters, layout.pool)

    def get_seq_length(self) -> int:
        """Memory tokens the language model sees (the number of `<|video_pad|>` placeholders to use)."""
        if self._state.frames_seen == 0:
            return 0
        merge = MERGE_SIZE * MERGE_SIZE
        dam, csm = self.grids()
        return dam[0] * dam[1] * dam[2] // merge + csm[0] * csm[1] * csm[2] // merge

    def snapshot(self) -> FlashVStreamQwen2VLMemory:
        """A memory frozen at the current state (no copy: states are never modified)."""
        return FlashVStreamQwen2VLMemory(self.layout, self._state)

    def reset(self) -> None:
        """Forget every frame and re-seed the k-means generator."""
        self.swap(self._empty_state(self.layout))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move the features (in place, like `nn.Module.to`); weights, times and indices keep their dtypes."""

        def move(tensor, floating=True):
            if tensor is None:
                return None
            return tensor.to(device, dtype) if floating and dtype is not None else tensor.to(device)

        s = self._state
        self.swap(
            dataclasses.replace(
                s,
                csm_features=move(s.csm_features),
                csm_weights=move(s.csm_weights, False),
                csm_times=move(s.csm_times, False),
                bank_full=tuple(move(t) for t in s.bank_full),
                bank_low=tuple(move(t) for t in s.bank_low),
                detail_full=move(s.detail_full),
                detail_low=move(s.detail_low),
                detail_index=move(s.detail_index, False),
            )
        )
        return self

    def batch_select_indices(self, indices) -> None:
        if list(torch.as_tensor(indices).view(-1).tolist()) != [0]:
            raise ValueError(f"a Flash-VStream-Qwen memory holds one stream; cannot select streams {indices!r}")

    def reorder_cache(self, beam_idx) -> None:
        """Beams share the one stream's memory: nothing to reorder."""

    # -- update -----------------------------------------------------------------------------------------------

    def add_frame(self, full: torch.Tensor, low: torch.Tensor, grid: tuple[int, int]) -> None:
        """Add one temporal patch: full-resolution `[h*w, D]` and low-resolution `[h'*w', D]` ViT features
        (before the merger) of a frame with patch grid `grid = (h, w)`."""
        with self._update_lock:
            self.swap(advance(self._state, self.layout, full, low, tuple(grid)))

    # -- read-out ---------------------------------------------------------------------------------------------

    def read_out(self) -> MemoryReadOut:
        """The DAM and CSM the language model reads (computed from the state; the state is not changed)."""
        s, layout = self._state, self.layout
        if s.frames_seen == 0:
            raise ValueError("the memory holds no frame yet: add frames before asking about it")
        dam_grid_, csm_grid_ = self.grids()
        csm_positions = s.csm_times.round().long()
        if layout.streaming_mode == "faithful":
            full, low = torch.stack(s.bank_full), torch.stack(s.bank_low)
            synopsis = ContextSynopsis(s.csm_features, s.csm_weights, csm_positions)
            dam, dam_positions = detail_augmentation_memory(full, low, synopsis, layout.num_patches)
        elif s.frames_seen <= layout.num_patches:  # every frame, in time order (the entries are the frames)
            dam, dam_positions = s.detail_full, s.detail_index
        else:
            heaviest = torch.argsort(s.csm_weights, descending=True)[: layout.num_patches]
            dam, dam_positions = s.detail_full[heaviest], s.detail_index[heaviest]
        return MemoryReadOut(dam, dam_positions, s.csm_features, csm_positions, dam_grid_, csm_grid_)

    # -- persistence ------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the memory to a safetensors file atomically: a crash at any moment leaves the previous file
        (`safetensors_file.write_atomically`)."""
        s = self._state
        metadata = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "frames_seen": str(s.frames_seen),
            "grid": json.dumps(list(s.grid)),
            "layout": json.dumps(dataclasses.asdict(self.layout)),
        }
        write_atomically(path, s.tensors(), metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> FlashVStreamQwen2VLMemory:
        """Read a memory written by `save`, checking every field first: a damaged or tampered file raises a
        `ValueError` naming the field. Nothing in the file is executed (safetensors: tensors and strings)."""
        metadata, tensors = read_tensors(path)
        try:
            layout, state = _checked_state(metadata, tensors)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        memory = cls(layout, state)
        return memory.to(device) if device is not None else memory

    def __repr__(self) -> str:
        return (
            f"FlashVStreamQwen2VLMemory(mode={self.streaming_mode!r}, frames_seen={self.frames_seen}, "
            f"tokens={self.get_seq_length()}, nbytes={self.nbytes})"
        )


# -- the update, as pure functions ----------------------------------------------------------------------------


def advance(
    state: MemoryState, layout: MemoryLayout, full: torch.Tensor, low: torch.Tensor, grid: tuple[int, int]
) -> MemoryState:
    """The state after one more temporal patch (`full [P_full, D]`, `low [P_low, D]` of a frame of grid `grid`)."""
    if state.frames_seen and grid != state.grid:
        raise ValueError(
            f"a stream's frames must all have one patch grid: this frame's is {grid}, the memory's {state.grid} "
            "(resize the frames of one stream to one size)"
        )
    h, w = grid
    low_tokens = (h // layout.pool) * (w // layout.pool)
    if full.dim() != 2 or full.shape[0] != h * w or low.dim() != 2 or low.shape != (low_tokens, full.shape[1]):
        raise ValueError(
            f"a frame of grid {grid} needs full features [{h * w}, D] and low [{low_tokens}, D], got "
            f"{tuple(full.shape)} and {tuple(low.shape)}"
        )
    if state.csm_features is not None and (low.dtype, low.device) != (
        state.csm_features.dtype,
        state.csm_features.device,
    ):
        low, full = low.to(state.csm_features), full.to(state.csm_features)
    index = state.frames_seen
    if state.csm_features is None:
        points, weights = low[None], torch.ones(1)
        times = torch.zeros(1, dtype=torch.float64)
    else:
        points = torch.cat([state.csm_features, low[None]])  # [k + 1, P_low, D]
        weights = torch.cat([state.csm_weights, torch.ones(1)])
        times = torch.cat([state.csm_times, torch.tensor([float(index)], dtype=torch.float64)])
    K = layout.num_clusters
    generator_state = state.generator_state
    if layout.streaming_mode == "faithful":
        if points.shape[0] <= K:  # the original: no clustering, weights 1, times 0..n-1
            csm = (points, torch.ones(points.shape[0]), torch.arange(points.shape[0], dtype=torch.float64))
        else:
            generator = _generator(generator_state)
            csm = _recluster_faithful(points, weights, K, generator)
            generator_state = generator.get_state()
        return dataclasses.replace(
            state,
            frames_seen=index + 1,
            grid=grid,
            csm_features=csm[0],
            csm_weights=csm[1],
            csm_times=csm[2],
            generator_state=generator_state,
            bank_full=(*state.bank_full, full),
            bank_low=(*state.bank_low, low),
        )

    detail_full = full[None] if state.detail_full is None else torch.cat([state.detail_full, full[None]])
    detail_low = low[None] if state.detail_low is None else torch.cat([state.detail_low, low[None]])
    detail_index = (
        torch.tensor([index]) if state.detail_index is None else torch.cat([state.detail_index, torch.tensor([index])])
    )
    if points.shape[0] > K:
        generator = _generator(generator_state)
        points, weights, times, chosen = _recluster_bounded(points, weights, times, detail_low, K, generator)
        generator_state = generator.get_state()
        detail_full, detail_low, detail_index = detail_full[chosen], detail_low[chosen], detail_index[chosen]
    return dataclasses.replace(
        state,
        frames_seen=index + 1,
        grid=grid,
        csm_features=points,
        csm_weights=weights,
        csm_times=times,
        generator_state=generator_state,
        detail_full=detail_full,
        detail_low=detail_low,
        detail_index=detail_index,
    )


def _recluster_faithful(points: torch.Tensor, weights: torch.Tensor, K: int, generator: torch.Generator):
    """The original's `weighted_kmeans_ordered_feature(x, K, weights)`: weighted k-means of the old centroids and
    the new patch; times are the mean *position in this concatenation* of each cluster's members (ordinal)."""
    n = points.shape[0]
    flat = points.float().reshape(n, -1)
    result = weighted_kmeans(flat, K, weights.float(), generator=generator)
    found = result.centroids.shape[0]
    times = cluster_timestamps(result.labels, found).double()
    order = torch.argsort(times.float())
    features = result.centroids.reshape(found, *points.shape[1:])[order]
    cluster_weights, times = result.weights[order], times[order]
    if result.degenerate:  # the original pads with the first points, weight 1, times 0..pad-1
        pad = K - found
        features = torch.cat([points[:pad].float(), features])
        cluster_weights = torch.cat([torch.ones(pad), cluster_weights])
        times = torch.cat([torch.arange(pad, dtype=torch.float64), times])
    return features.to(points.dtype), cluster_weights.float(), times


def _recluster_bounded(
    points: torch.Tensor,
    weights: torch.Tensor,
    times: torch.Tensor,
    candidates_low: torch.Tensor,
    K: int,
    generator: torch.Generator,
):
    """K + 1 weighted entries -> K: the same weighted k-means as the original's realtime update, each cluster
    carrying its members' weighted mean absolute time and, as its detail candidate, the member candidate nearest
    to its centroid. Returns `(features [K, P, D], weights [K], times [K], chosen candidate per cluster [K])`."""
    n = points.shape[0]
    flat = points.float().reshape(n, -1)
    result = weighted_kmeans(flat, K, weights.float(), generator=generator)
    candidates = candidates_low.float().reshape(n, -1)
    if result.degenerate:
        # Fewer than K distinct entries (repeated frames): merge the new entry into its nearest one instead.
        distances = euclidean_distances(flat[-1:], flat[:-1])[0].nan_to_num(0.0)
        target = int(torch.argmin(distances))
        labels = torch.arange(n)
        labels[-1] = target
        centroids = flat[:-1].clone()
        total = weights[target] + weights[-1]
        centroids[target] = (weights[target] * flat[target] + weights[-1] * flat[-1]) / total
        found = K
    else:
        labels, centroids, found = result.labels, result.centroids, K
    cluster_weights = torch.zeros(found)
    cluster_times = torch.zeros(found, dtype=torch.float64)
    chosen = torch.zeros(found, dtype=torch.long)
    distances = euclidean_distances(centroids, candidates)  # [K, n]
    for cluster in range(found):
        members = (labels == cluster).nonzero().view(-1)
        if members.numel() == 0:  # left empty by the last assignment: the nearest candidate of all
            chosen[cluster] = int(torch.argmin(distances[cluster]))
            cluster_times[cluster] = times[chosen[cluster]]
            continue
        member_weights = weights[members].double()
        cluster_weights[cluster] = weights[members].sum()
        cluster_times[cluster] = (member_weights * times[members]).sum() / member_weights.sum()
        chosen[cluster] = members[int(torch.argmin(distances[cluster, members]))]
    order = torch.argsort(cluster_times)
    features = centroids.reshape(found, *points.shape[1:])[order].to(points.dtype)
    return features, cluster_weights[order], cluster_times[order], chosen[order]


# -- checking a memory file -----------------------------------------------------------------------------------


def _checked_state(metadata: dict, tensors: dict[str, torch.Tensor]) -> tuple[MemoryLayout, MemoryState]:
    if metadata.get("format") != FILE_FORMAT:
        raise ValueError(f"it is not a Flash-VStream-Qwen memory file (format {metadata.get('format')!r})")
    if metadata.get("version") != FILE_VERSION:
        raise ValueError(f"it has memory format version {metadata.get('version')!r}, expected {FILE_VERSION}")
    try:
        layout = MemoryLayout(**json.loads(metadata.get("layout") or "null"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"its layout is not a Flash-VStream-Qwen memory layout: {error}") from error
    text = metadata.get("frames_seen")
    if text is None or not text.isdigit() or int(text) > MAX_FRAMES_SEEN:
        raise ValueError(f"frames_seen must be an integer >= 0 and <= {MAX_FRAMES_SEEN}, got {text!r}")
    frames = int(text)
    try:
        grid = json.loads(metadata.get("grid") or "null")
        if not (isinstance(grid, list) and len(grid) == 2 and all(type(v) is int and v >= 0 for v in grid)):
            raise ValueError
    except ValueError:
        raise ValueError(f"grid must be [h, w] (ints >= 0), got {metadata.get('grid')!r}") from None
    h, w = grid
    if frames and (h % (2 * layout.pool) or w % (2 * layout.pool) or not h or not w):
        raise ValueError(
            f"grid {grid} cannot hold a memory of pool {layout.pool} (h, w multiples of {2 * layout.pool})"
        )
    if not frames and grid != [0, 0]:
        raise ValueError(f"grid is {grid} but frames_seen is 0 (expected [0, 0])")

    generator_state = tensors.get("generator_state")
    try:
        torch.Generator().set_state(generator_state)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"generator_state is not a k-means generator state: {error}") from error

    faithful = layout.streaming_mode == "faithful"
    expected = {"generator_state"}
    if frames:
        expected |= {"csm_features", "csm_weights", "csm_times"}
        expected |= {"bank_full", "bank_low"} if faithful else {"detail_full", "detail_low", "detail_index"}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing:
        raise ValueError(f"it lacks memory tensors {missing} (frames_seen {frames}, mode {layout.streaming_mode})")
    if extra:
        raise ValueError(f"it holds unexpected tensors {extra} (frames_seen {frames}, mode {layout.streaming_mode})")
    if not frames:
        return layout, MemoryState(0, (0, 0), None, None, None, generator_state)

    features = tensors["csm_features"]
    if not features.is_floating_point() or features.dim() != 3:
        raise ValueError(f"csm_features must be a floating-point [k, P_low, D] tensor, got {tuple(features.shape)}")
    k, dim = min(frames, layout.num_clusters), features.shape[-1]
    full_tokens, low_tokens = h * w, (h // layout.pool) * (w // layout.pool)
    shapes = {
        "csm_features": ((k, low_tokens, dim), features.dtype),
        "csm_weights": ((k,), torch.float32),
        "csm_times": ((k,), torch.float64),
    }
    if faithful:
        shapes["bank_full"] = ((frames, full_tokens, dim), features.dtype)
        shapes["bank_low"] = ((frames, low_tokens, dim), features.dtype)
    else:
        shapes["detail_full"] = ((k, full_tokens, dim), features.dtype)
        shapes["detail_low"] = ((k, low_tokens, dim), features.dtype)
        shapes["detail_index"] = ((k,), torch.int64)
    for name, (shape, dtype) in shapes.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"tensor {name} has shape {tuple(tensor.shape)}, frames_seen {frames} needs {shape}")
        if tensor.dtype != dtype:
            raise ValueError(f"tensor {name} has dtype {tensor.dtype}, expected {dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"tensor {name} holds NaN or inf values")
    weights, times = tensors["csm_weights"], tensors["csm_times"]
    if (weights < 0).any() or (weights != weights.round()).any():
        raise ValueError("csm_weights must be whole numbers >= 0 (frames per cluster)")
    if (times < -1).any() or (times > frames - 1).any():
        raise ValueError(f"csm_times must lie in [-1, {frames - 1}] (frame indices), got {times.tolist()}")
    if not faithful:
        if abs(float(weights.double().sum()) - frames) > 0.5:
            raise ValueError(f"csm_weights count {float(weights.sum()):.0f} frames but frames_seen is {frames}")
        index = tensors["detail_index"]
        if (index < 0).any() or (index >= frames).any():
            raise ValueError(f"detail_index must hold frame indices in [0, {frames}), got {index.tolist()}")
        state = MemoryState(frames, (h, w), features, weights, times, generator_state,
                            detail_full=tensors["detail_full"], detail_low=tensors["detail_low"],
                            detail_index=index)  # fmt: skip
    else:
        state = MemoryState(frames, (h, w), features, weights, times, generator_state,
                            bank_full=tuple(tensors["bank_full"].unbind(0)),
                            bank_low=tuple(tensors["bank_low"].unbind(0)))  # fmt: skip
    return layout, state


__all__ = ["STREAMING_MODES", "FlashVStreamQwen2VLMemory", "MemoryLayout", "MemoryReadOut", "MemoryState"]
