"""The STAR memory of Flash-VStream: Spatial, Temporal, Abstract and Retrieved memories of a video stream.

Everything about how frames are consolidated lives here, as small pure functions on tensors plus one
immutable `StarState`. A frame enters as `P_spa x P_spa` pooled vision features and stays in the spatial
(current) window for `N_spa` frames. When it leaves the window it moves into:

- the temporal memory: `N_tem` centroids of `P_tem x P_tem` tokens, kept by weighted k-means whose weights are
  the cluster sizes, so old centroids weigh as much as the frames they stand for (paper Alg. 1);
- the abstract memory: `N_abs` entries of `P_abs x P_abs` tokens, initialised with the first `N_abs` frames and
  then updated by semantic attention in chunks of `N_abs` frames (paper Alg. 2, as the released code does it);
- the retrieval store, from which `N_ret` key frames are read out at spatial resolution (paper Alg. 3, or the
  released code's behaviour, bug B1 in docs/original_model.md).

Fed all frames at once, this reproduces the released code's offline consolidation (docs/original_model.md) for the same
k-means initialisation; fed frame by frame, the abstract memory stays identical to the offline one because the
chunk boundaries are the same. The state is bounded: its size never depends on the number of frames seen.

Distances and k-means run in float32 whatever the storage dtype (fp16 overflows over 16,384-dim vectors).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:  # flat in a Hub bundle: next to this file
    from .memory_tokens_flash_vstream import MemoryCounts, memory_counts, memory_tokens
except ImportError:  # in the package it lives in processing/ (standard library only, shared with the processor)
    _tokens = importlib.import_module("..processing.memory_tokens_flash_vstream", __package__)
    MemoryCounts, memory_counts, memory_tokens = _tokens.MemoryCounts, _tokens.memory_counts, _tokens.memory_tokens

# attention(memory [B, M, D], frames [B, X, D]) -> softmax weights [B, M, X]
AttentionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StarLayout:
    """Geometry and hyper-parameters of a STAR memory, the part of the config a memory depends on."""

    feature_size: int  # D, vision hidden size
    patch_grid_size: int  # g, side of the vision patch grid
    spatial_pool_size: int  # P_spa
    temporal_pool_size: int  # P_tem
    abstract_pool_size: int  # P_abs
    spatial_length: int  # N_spa
    temporal_length: int  # N_tem
    abstract_length: int  # N_abs
    retrieved_length: int  # N_ret
    abstract_update_ratio: float
    kmeans_max_iter: int
    kmeans_tol: float
    retrieval_mode: str
    memory_seed: int

    @classmethod
    def from_config(cls, config) -> StarLayout:
        fields = {f.name for f in dataclasses.fields(cls)} - {"feature_size", "patch_grid_size"}
        return cls(
            feature_size=config.vision_config.hidden_size,
            patch_grid_size=config.patch_grid_size,
            **{name: getattr(config, name) for name in fields},
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def differences(self, other: StarLayout, ignore: tuple[str, ...] = ()) -> list[str]:
        """Names and values of the fields that differ, e.g. `["temporal_length: 25 != 8"]`, except `ignore`."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{name}: {mine[name]!r} != {theirs[name]!r}"
            for name in mine
            if mine[name] != theirs[name] and name not in ignore
        ]

    @property
    def spatial_tokens(self) -> int:
        return self.spatial_pool_size**2

    @property
    def temporal_tokens(self) -> int:
        return self.temporal_pool_size**2

    @property
    def abstract_tokens(self) -> int:
        return self.abstract_pool_size**2

    def counts(self, frames_seen: int) -> MemoryCounts:
        """How many entries of each memory are filled after `frames_seen` frames (`memory_counts`)."""
        return memory_counts(self, frames_seen)

    def num_tokens(self, frames_seen: int) -> int:
        """Number of memory tokens the language model sees after `frames_seen` frames (`memory_tokens`, the one
        definition the processor uses too; docs/original_model.md, "Token order and counts").

        With the released config: 64 for one frame, `17 L + 64 min(3, L) + 64` for `L = T - 1` up to 25, and 681
        from 26 frames on.
        """
        return memory_tokens(self, frames_seen)


@dataclass(frozen=True)
class StarState:
    """One immutable version of the memory of `B` streams. Updates build a new state; tensors are never modified.

    Capacities are fixed by the layout, so the state has the same size after 10 frames and after 10,000; which
    entries are filled follows from `frames_seen` (see `StarLayout.counts`).
    """

    frames_seen: int
    # Field names are saved in memory files: `current` is the spatial memory (`spatial_*` in the config) and
    # `key_frames` the retrieval store (docs/glossary.md, "Where names differ today").
    current: torch.Tensor  # [B, N_spa, P_spa^2, D] the spatial memory: most recent frames, oldest first
    temporal: torch.Tensor  # [B, N_tem, P_tem^2, D] frames, then k-means centroids in cluster-id order
    temporal_sizes: torch.Tensor  # [B, N_tem] float32, frames each temporal entry stands for
    abstract: torch.Tensor  # [B, N_abs, P_abs^2, D] abstract memory (the first frames until it is full)
    abstract_pending: torch.Tensor  # [B, N_abs, P_abs^2, D] frames waiting for a full abstract chunk
    key_frames: torch.Tensor  # [B, N_tem, P_spa^2, D] retrieval store, see `update_key_frames`
    generator_state: torch.Tensor  # uint8 state of the CPU generator used by k-means

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "frames_seen"}

    @property
    def batch_size(self) -> int:
        return self.current.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def replace(self, **changes) -> StarState:
        return dataclasses.replace(self, **changes)

    def map_tensors(self, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> StarState:
        """New state with `fn(name, tensor)` applied to every tensor (used for `to`, batch selection)."""
        return self.replace(**{name: fn(name, t) for name, t in self.tensors().items()})


def empty_state(
    layout: StarLayout, batch_size: int, device: torch.device | str | None, dtype: torch.dtype
) -> StarState:
    """A memory that has seen no frame, with its k-means generator seeded by `layout.memory_seed`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def zeros(length: int, pool_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, length, pool_size**2, layout.feature_size, device=device, dtype=dtype)

    generator = torch.Generator().manual_seed(layout.memory_seed)
    return StarState(
        frames_seen=0,
        current=zeros(layout.spatial_length, layout.spatial_pool_size),
        temporal=zeros(layout.temporal_length, layout.temporal_pool_size),
        temporal_sizes=torch.zeros(batch_size, layout.temporal_length, device=device, dtype=torch.float32),
        abstract=zeros(layout.abstract_length, layout.abstract_pool_size),
        abstract_pending=zeros(layout.abstract_length, layout.abstract_pool_size),
        key_frames=zeros(layout.temporal_length, layout.spatial_pool_size),
        generator_state=generator.get_state(),
    )


# ----------------------------------------------------------------------------------------------------------------
# Pure maths
# ----------------------------------------------------------------------------------------------------------------


def pool_spatial(features: torch.Tensor, pool_size: int) -> torch.Tensor:
    """Average-pool square token grids: `[..., p*p, D] -> [..., s*s, D]` with non-overlapping `p/s` windows.

    Tokens are in row-major (h, w) order, as CLIP patches are; `s = 1` is the mean over all tokens.
    """
    *lead, tokens, dim = features.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"expected a square grid of tokens, got {tokens} tokens")
    if side == pool_size:
        return features
    if pool_size == 1:
        return features.mean(dim=-2, keepdim=True)
    if side % pool_size:
        raise ValueError(f"pool size {pool_size} does not divide the {side}x{side} token grid")
    grid = features.reshape(-1, side, side, dim).permute(0, 3, 1, 2)  # [N, D, p, p]
    pooled = F.avg_pool2d(grid, side // pool_size)  # [N, D, s, s]
    return pooled.permute(0, 2, 3, 1).reshape(*lead, pool_size * pool_size, dim)


def squared_distances(
    points: torch.Tensor, centroids: torch.Tensor, point_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared Euclidean distances `[B, N, F] x [B, K, F] -> [B, N, K]` in the matmul form (no `[B, N, K, F]`).

    `point_norms` `[B, N, 1]`, if given, must be `points.pow(2).sum(-1, keepdim=True)` (k-means reuses it).
    """
    if point_norms is None:
        point_norms = points.pow(2).sum(-1, keepdim=True)  # [B, N, 1]
    centroid_norms = centroids.pow(2).sum(-1).unsqueeze(1)  # [B, 1, K]
    return torch.baddbmm(point_norms + centroid_norms, points, centroids.transpose(1, 2), alpha=-2.0)


def weighted_kmeans(
    points: torch.Tensor,
    weights: torch.Tensor,
    num_clusters: int,
    generator: torch.Generator,
    max_iter: int = 10,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted k-means of `B` point sets at once, as the released `weighted_kmeans_torch` does it per set.

    Args:
        points: `[B, N, F]` float32, `N > num_clusters`.
        weights: `[B, N]` float32, the number of frames each point stands for.
        generator: CPU generator; set `b` is initialised with `randperm(N, generator)[:K]`, drawn for b = 0, 1, ...
            (the original draws from the global generator, so seeding both alike picks the same centroids).

    Returns:
        centroids `[B, K, F]` in cluster-id order and their weights `[B, K]` (cluster sizes). A set stops when
        its summed centroid shift drops below `tol`, keeping the centroids it had, as the original does; after
        `max_iter` iterations the last update is kept while the sizes are those of the last assignment.
        Empty clusters are re-seeded with random points drawn from `generator` (the original uses Python's
        `random`, which this cannot reproduce).
    """
    batch, num_points, _ = points.shape
    init = torch.stack([torch.randperm(num_points, generator=generator)[:num_clusters] for _ in range(batch)])
    centroids = gather_frames(points, init)  # [B, K, F]
    point_norms = points.pow(2).sum(-1, keepdim=True)  # [B, N, 1], the same every iteration
    sizes = weights.new_zeros(batch, num_clusters)
    running = torch.ones(batch, dtype=torch.bool, device=points.device)
    for _ in range(max_iter):
        labels = squared_distances(points, centroids, point_norms).argmin(-1)  # [B, N]
        assignment = F.one_hot(labels, num_clusters).to(points.dtype) * weights.unsqueeze(-1)  # [B, N, K]
        new_sizes = assignment.sum(1)  # [B, K]
        new_centroids = assignment.transpose(1, 2) @ points / new_sizes.clamp_min(1e-12).unsqueeze(-1)
        empty = new_sizes == 0
        if empty.any():
            picks = torch.randint(num_points, (batch, num_clusters), generator=generator).to(points.device)
            reseeded = gather_frames(points, picks)
            new_centroids = torch.where(empty.unsqueeze(-1), reseeded, new_centroids)
        shift = (centroids - new_centroids).norm(dim=-1).sum(-1)  # [B]
        sizes = torch.where(running.unsqueeze(-1), new_sizes, sizes)
        running = running & (shift >= tol)
        still_moving = int(running.sum())  # one host sync per iteration, as the stopping test needs anyway
        if still_moving == 0:
            break
        # Sets that stopped keep their centroids; skip the full-size select when every set moves (the usual case).
        if still_moving == batch:
            centroids = new_centroids
        else:
            centroids = torch.where(running.view(-1, 1, 1), new_centroids, centroids)
    return centroids, sizes


def abstract_update(
    memory: torch.Tensor, frames: torch.Tensor, attention: AttentionFn, update_ratio: float
) -> torch.Tensor:
    """One semantic-attention update of the abstract memory, as the released code computes it
    (docs/original_model.md, "Abstract memory").

    `M <- M (1 - decay) + W X` with `W = ratio * softmax(q(M) k(X)^T / sqrt(h))` and `decay = W.sum(-1)`.

    Args:
        memory: `[B, N_abs, P_abs^2, D]`.
        frames: `[B, n, P_abs^2, D]`, one chunk of `n <= N_abs` frames.
    Returns:
        `[B, N_abs, P_abs^2, D]` in the dtype of `memory`; the mixing runs in float32.
    """
    rows = memory.flatten(1, 2)  # [B, N_abs * P_abs^2, D]
    new = frames.flatten(1, 2)  # [B, n * P_abs^2, D]
    weights = attention(rows, new).float() * update_ratio  # [B, rows, new]
    decay = weights.sum(-1, keepdim=True)
    mixed = rows.float() * (1 - decay) + weights @ new.float().to(weights.device)
    return mixed.to(memory.dtype).view_as(memory)


def nearest_rows(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Index of the candidate nearest to each query, `[B, Q, F] x [B, C, F] -> [B, Q]`; ties go to the first.

    Exact differences rather than the matmul form, so an identical row is at distance 0 as in the original.
    Only used on bounded sets (at most `N_tem` candidates).
    """
    distances = torch.cdist(queries.float(), candidates.float(), compute_mode="donot_use_mm_for_euclid_dist")
    return distances.argmin(-1)


def gather_frames(frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`frames[b, index[b, i]]`: `[B, N, ...]`, `[B, K]` -> `[B, K, ...]` (frames, points, any rows).

    `index_select` copies whole rows; `gather` with an expanded index reads one index per element, which made it
    the largest cost of a k-means update at 16,384 features per row.
    """
    batch, length = frames.shape[:2]
    flat_index = index.to(frames.device) + torch.arange(batch, device=frames.device).unsqueeze(1) * length  # [B, K]
    return frames.flatten(0, 1).index_select(0, flat_index.flatten()).view(*index.shape, *frames.shape[2:])


def fill(capacity: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """A new tensor shaped like `capacity` holding `entries` first and zeros after them (dim 1)."""
    out = torch.zeros_like(capacity)
    out[:, : entries.shape[1]] = entries.to(out.dtype)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Consolidation and read-out
# ----------------------------------------------------------------------------------------------------------------


def consolidate(state: StarState, layout: StarLayout, frames: torch.Tensor, attention: AttentionFn) -> StarState:
    """The frame handler: add `frames` `[B, T, P_spa^2, D]` (oldest first) and return the new state.

    Frames that leave the spatial window go to the temporal, abstract and retrieval memories in one step, so T
    frames on an empty memory is exactly the released code's offline consolidation of a T-frame video.
    """
    counts = layout.counts(state.frames_seen)
    spatial_window = torch.cat([state.current[:, : counts.current], frames.to(state.current)], dim=1)
    keep = min(spatial_window.shape[1], layout.spatial_length)
    leaving = spatial_window[:, : spatial_window.shape[1] - keep]  # [B, m, P_spa^2, D]
    new_state = state.replace(
        frames_seen=state.frames_seen + frames.shape[1],
        current=fill(state.current, spatial_window[:, spatial_window.shape[1] - keep :]),
    )
    if leaving.shape[1] == 0:
        return new_state
    if layout.temporal_length > 0:
        new_state = update_temporal(new_state, state, layout, leaving)
    if layout.abstract_length > 0:
        new_state = update_abstract(new_state, counts, layout, leaving, attention)
    return new_state


def update_temporal(new_state: StarState, old: StarState, layout: StarLayout, leaving: torch.Tensor) -> StarState:
    """Cluster the old temporal entries (weighted by size) with the frames that left the window, and update
    the retrieval store accordingly."""
    counts = layout.counts(old.frames_seen)
    pooled = pool_spatial(leaving, layout.temporal_pool_size)  # [B, m, P_tem^2, D]
    points = torch.cat([old.temporal[:, : counts.temporal], pooled], dim=1)  # [B, n, P_tem^2, D]
    weights = torch.cat([old.temporal_sizes[:, : counts.temporal], pooled.new_ones(pooled.shape[:2]).float()], 1)
    clustered = points.shape[1] > layout.temporal_length
    if clustered:
        generator = torch.Generator()
        generator.set_state(old.generator_state)
        centroids, weights = weighted_kmeans(
            points.flatten(2).float(),
            weights,
            layout.temporal_length,
            generator,
            layout.kmeans_max_iter,
            layout.kmeans_tol,
        )
        points = centroids.view(-1, layout.temporal_length, *pooled.shape[2:])
        new_state = new_state.replace(generator_state=generator.get_state())
    key_frames = update_key_frames(old, counts, layout, leaving, pooled, points if clustered else None)
    return new_state.replace(
        temporal=fill(old.temporal, points),
        temporal_sizes=fill(old.temporal_sizes, weights),
        key_frames=key_frames,
    )


def update_key_frames(
    old: StarState,
    counts: MemoryCounts,
    layout: StarLayout,
    leaving: torch.Tensor,
    leaving_pooled: torch.Tensor,
    centroids: torch.Tensor | None,
) -> torch.Tensor:
    """The retrieval store after `leaving` `[B, m, P_spa^2, D]` left the window (`leaving_pooled`: the same
    frames at `P_tem`, as `update_temporal` pooled them).

    - `"original"`: the first `N_tem` frames that ever left the window, in order; the released code's key
      frames are always among them (bug B1 in docs/original_model.md), so this reproduces it with bounded state.
    - `"paper"`: for each temporal entry, the frame nearest to it among the previous key frames and the new
      frames (before clustering starts, every entry is a frame and is its own key frame).
    """
    if layout.retrieval_mode == "original":
        room = layout.temporal_length - counts.past
        if room <= 0:
            return old.key_frames
        retrieval_store = old.key_frames.clone()
        added = leaving[:, :room]
        retrieval_store[:, counts.past : counts.past + added.shape[1]] = added
        return retrieval_store
    candidates = torch.cat([old.key_frames[:, : counts.temporal], leaving], dim=1)  # [B, r, P_spa^2, D]
    if centroids is None:
        return fill(old.key_frames, candidates)
    stored_points = pool_spatial(old.key_frames[:, : counts.temporal], layout.temporal_pool_size)
    candidate_points = torch.cat([stored_points, leaving_pooled.to(stored_points)], dim=1).flatten(2).float()
    nearest = squared_distances(centroids.flatten(2).float(), candidate_points).argmin(-1)  # [B, N_tem]
    return gather_frames(candidates, nearest)


def update_abstract(
    new_state: StarState, counts: MemoryCounts, layout: StarLayout, leaving: torch.Tensor, attention: AttentionFn
) -> StarState:
    """Fill the abstract memory with the first `N_abs` frames, then apply every full chunk of `N_abs` frames;
    the frames of an unfinished chunk wait in `abstract_pending` (the read-out applies them)."""
    frames = pool_spatial(leaving, layout.abstract_pool_size)  # [B, m, P_abs^2, D]
    abstract = new_state.abstract
    filled = min(frames.shape[1], layout.abstract_length - counts.abstract)
    if filled > 0:
        abstract = abstract.clone()
        abstract[:, counts.abstract : counts.abstract + filled] = frames[:, :filled]
    queue = torch.cat([new_state.abstract_pending[:, : counts.pending], frames[:, filled:]], dim=1)
    chunk = layout.abstract_length
    full_chunks = queue.shape[1] // chunk
    for i in range(full_chunks):  # sequential by definition: each chunk updates the previous memory
        abstract = abstract_update(
            abstract, queue[:, i * chunk : (i + 1) * chunk], attention, layout.abstract_update_ratio
        )
    return new_state.replace(
        abstract=abstract,
        abstract_pending=fill(new_state.abstract_pending, queue[:, full_chunks * chunk :]),
    )


def select_key_frames(state: StarState, layout: StarLayout) -> torch.Tensor:
    """The retrieved key frames `[B, r, P_spa^2, D]`, largest temporal clusters first.

    `"original"` ranks with `torch.argsort(sizes, descending=True)` exactly as the released code, so ties (all
    sizes are 1 before clustering starts) break as that call breaks them on the same device; then it takes
    the frame nearest to the frame whose index is the cluster id (bug B1 in docs/original_model.md). `"paper"`
    breaks ties by order.
    """
    counts = layout.counts(state.frames_seen)
    if counts.retrieved == 0:
        return state.key_frames[:, :0]
    sizes = state.temporal_sizes[:, : counts.temporal]
    stable = layout.retrieval_mode == "paper"
    order = torch.argsort(sizes, dim=-1, descending=True, stable=stable)[:, : counts.retrieved]  # [B, r]
    if layout.retrieval_mode == "paper":
        return gather_frames(state.key_frames, order)
    stored = state.key_frames[:, : counts.temporal]
    stored_points = pool_spatial(stored, layout.temporal_pool_size).flatten(2)  # [B, n, P_tem^2 * D]
    queries = gather_frames(stored_points, order)
    return gather_frames(stored, nearest_rows(queries, stored_points))


def read_out(state: StarState, layout: StarLayout, attention: AttentionFn) -> torch.Tensor:
    """The memory as the language model sees it: `[B, N, D]` tokens in the order
    `[abstract | temporal | retrieved | current]`, `N = layout.num_tokens(state.frames_seen)`."""
    counts = layout.counts(state.frames_seen)
    abstract = state.abstract[:, : counts.abstract]
    if counts.pending:
        abstract = abstract_update(
            abstract, state.abstract_pending[:, : counts.pending], attention, layout.abstract_update_ratio
        )
    segments = [
        abstract,
        state.temporal[:, : counts.temporal],
        select_key_frames(state, layout),
        state.current[:, : counts.current],
    ]
    return torch.cat([segment.flatten(1, 2) for segment in segments], dim=1)
