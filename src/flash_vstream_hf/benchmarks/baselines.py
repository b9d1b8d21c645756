"""The alternatives Flash-VStream's STAR memory is measured against, with the same feature shapes.

- `released_update`: the released code's memory (docs/original_model.md): every frame is appended to an unbounded
  fp16 buffer of 8x8-pooled frames (bug B3), and the memory is re-consolidated offline from all frames seen, with
  k-means distances materialised as `[T, K, F]` (bug B15) and a Python loop over clusters. Written here from
  docs/original_model.md; the original code is not imported.
- `NaiveContext`: every frame's 8x8 pooled tokens in the prompt, as offline video LLMs do, up to the context.
- `RecentWindow`: the last `W` frames at 8x8, `W` chosen so they fit the STAR memory's token budget.
"""

from __future__ import annotations

from collections import deque

import torch

from ..modeling.star_memory import AttentionFn, StarLayout, abstract_update, pool_spatial


def released_kmeans(
    points: torch.Tensor, num_clusters: int, generator: torch.Generator, max_iter: int = 10, tol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released `weighted_kmeans_torch` with all weights 1 (docs/original_model.md, "Temporal memory"), in the
    dtype of `points` `[T, F]`.

    Returns centroids `[K, F]` and cluster sizes `[K]`. Distances are computed by broadcasting, which holds a
    `[T, K, F]` tensor (bug B15), and the centroids are updated cluster by cluster in a Python loop.
    """
    num_points = points.shape[0]
    weights = points.new_ones(num_points)
    centroids = points[torch.randperm(num_points, generator=generator)[:num_clusters]]
    sizes = points.new_zeros(num_clusters)
    for _ in range(max_iter):
        distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1).sqrt()  # [T, K]
        labels = distances.argmin(dim=1)
        sums = torch.zeros_like(centroids)
        sizes = points.new_zeros(num_clusters)
        for cluster in range(num_clusters):
            members = labels == cluster
            sums[cluster] = (weights[members, None] * points[members]).sum(0)
            sizes[cluster] = weights[members].sum()
        filled = sizes > 0
        new_centroids = torch.zeros_like(centroids)
        new_centroids[filled] = sums[filled] / sizes[filled, None]
        if not filled.all():  # the original re-seeds every empty cluster with one random frame
            new_centroids[~filled] = points[torch.randint(num_points, (1,), generator=generator)]
        shift = (centroids - new_centroids).norm(dim=1).sum()
        if shift < tol:
            break
        centroids = new_centroids
    return centroids, sizes


def released_memory(
    frames: torch.Tensor, layout: StarLayout, attention: AttentionFn, generator: torch.Generator
) -> torch.Tensor:
    """The released offline consolidation of all `frames` `[T, P_spa^2, D]` seen so far: `[N, D]` memory tokens.

    Order `[abstract | temporal | retrieved | current]`, retrieval as the released code does it (bug B1 in
    docs/original_model.md).
    """
    current, past = frames[-1:], frames[:-1]
    length = past.shape[0]
    temporal = pool_spatial(past, layout.temporal_pool_size)  # [L, P_tem^2, D]
    weight = temporal.new_ones(length)
    if length > layout.temporal_length:
        centroids, weight = released_kmeans(
            temporal.flatten(1), layout.temporal_length, generator, layout.kmeans_max_iter, layout.kmeans_tol
        )
        clustered = centroids.view(layout.temporal_length, *temporal.shape[1:])
    else:
        clustered = temporal
    retrieved = past[:0]
    if length:
        order = torch.argsort(weight, descending=True)
        keys = temporal[order][: layout.retrieved_length]  # frames indexed by cluster id (bug B1)
        distances = ((temporal[:, None] - keys[None]) ** 2).sum(3).sum(2).sqrt()  # [L, k] via [L, k, P_tem^2, D]
        retrieved = past[distances.argmin(dim=0)]
    abstract = pool_spatial(past, layout.abstract_pool_size)  # [L, P_abs^2, D]
    if length > layout.abstract_length:
        memory = abstract[None, : layout.abstract_length]
        for start in range(layout.abstract_length, length, layout.abstract_length):
            chunk = abstract[None, start : start + layout.abstract_length]
            memory = abstract_update(memory, chunk, attention, layout.abstract_update_ratio)
        abstract = memory[0]
    return torch.cat([segment.flatten(0, 1) for segment in (abstract, clustered, retrieved, current)])


def released_update(
    buffer: torch.Tensor,
    frame: torch.Tensor,
    layout: StarLayout,
    attention: AttentionFn,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame handler step of the released algorithm: append `frame` `[P_spa^2, D]` to `buffer`
    `[T, P_spa^2, D]` (a full copy, as `torch.cat` in the original) and re-consolidate everything.

    Returns the new buffer `[T + 1, P_spa^2, D]` and the memory tokens `[N, D]`.
    """
    buffer = torch.cat([buffer, frame[None].to(buffer.dtype)])
    return buffer, released_memory(buffer, layout, attention, generator)


def released_kmeans_bytes(frames: int, layout: StarLayout, element_size: int = 2) -> int:
    """Bytes of one `[T, K, F]` distance tensor of the released k-means for `frames` frames seen."""
    features = layout.temporal_tokens * layout.feature_size
    return max(frames - layout.spatial_length, 0) * layout.temporal_length * features * element_size


class RecentWindow:
    """The last `window` frames at spatial resolution (`P_spa^2` tokens each): constant cost, forgets the rest."""

    def __init__(self, layout: StarLayout, token_budget: int):
        self.layout = layout
        self.window = max(1, token_budget // layout.spatial_tokens)
        self.frames: deque[torch.Tensor] = deque(maxlen=self.window)

    def add(self, features: torch.Tensor) -> None:
        """Add frames `[1, T, g*g, D]` (vision features before pooling)."""
        for frame in pool_spatial(features, self.layout.spatial_pool_size)[0]:
            self.frames.append(frame)

    def tokens(self) -> torch.Tensor:
        """`[n * P_spa^2, D]`, oldest frame first."""
        return torch.cat(list(self.frames))


class NaiveContext:
    """Every frame seen at spatial resolution in the prompt; stops at the language model's context."""

    def __init__(self, layout: StarLayout, context_length: int, text_tokens: int):
        self.layout = layout
        self.max_frames = (context_length - text_tokens) // layout.spatial_tokens
        self.frames: list[torch.Tensor] = []

    def fits(self, frames: int) -> bool:
        return frames <= self.max_frames

    def tokens_for(self, frames: int) -> int:
        return frames * self.layout.spatial_tokens

    def add(self, features: torch.Tensor) -> None:
        """Add frames `[1, T, g*g, D]`; raises once the prompt would exceed the context."""
        pooled = pool_spatial(features, self.layout.spatial_pool_size)[0]
        if len(self.frames) + pooled.shape[0] > self.max_frames:
            raise ValueError(
                f"naive full context holds at most {self.max_frames} frames in its context, got "
                f"{len(self.frames) + pooled.shape[0]}"
            )
        self.frames.extend(pooled)

    def tokens(self) -> torch.Tensor:
        return torch.cat(self.frames)
