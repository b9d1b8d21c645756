"""Flash Memory of Flash-VStream v2, as small pure functions.

A video enters as Qwen2-VL patch rows: `pixel_values_videos` of shape `[t * h * w, C * 2 * 14 * 14]` for a grid
`(t, h, w)` of temporal patches (2 frames each) by `h x w` patches of 14 px, rows in merge order (2x2 blocks of
patches are consecutive). The memory is built from the vision tower's features *before* the patch merger:

1. `pool_patches_in_pixel_space`: a low-resolution copy of every temporal patch, 2x2-average-pooled in pixel
   space, grid `(t, h/2, w/2)`. Both copies go through the ViT in one pass.
2. Context Synopsis Memory (CSM), `context_synopsis_memory`: the low-resolution features of all temporal patches,
   clustered into `K` weighted k-means centroids ordered by their mean time (`weighted_ordered_kmeans`); with
   `t <= K` the features are kept as they are.
3. Detail Augmentation Memory (DAM), `detail_augmentation_memory`: for each of the `S` heaviest clusters, the
   full-resolution features of the temporal patch nearest its centroid (`t <= S`: all temporal patches).

The language model sees `[DAM | CSM]` after the merger. Each function reproduces the released code
(Flash-VStream-Qwen, `models/compress_functions.py` and `models/vstream_qwen2vl_model.py`) operation by operation,
random draws included, so a seeded run gives the original's memory bit for bit; its quirks are noted where they are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2


def pool_patches_in_pixel_space(
    pixel_patches: torch.Tensor, grid_thw: tuple[int, int, int], channels: int = 3, pool: int = 2
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The low-resolution copy of one video: every frame 2x2-average-pooled in pixel space, re-cut into patches.

    Args:
        pixel_patches: `[t * h * w, channels * 2 * 14 * 14]`, one video's rows of `pixel_values_videos`.
        grid_thw: `(t, h, w)` of that video; `h` and `w` must be multiples of 4 (the processor resizes to 56 px).

    Returns:
        `([t * h/2 * w/2, channels * 2 * 14 * 14], (t, h/2, w/2))`, rows in the same merge order.
    """
    t, h, w = grid_thw
    if pool != 2:
        raise ValueError(f"only a 2x2 pixel-space pool is supported, got pool={pool}")
    if h % (2 * MERGE_SIZE) or w % (2 * MERGE_SIZE):
        raise ValueError(
            f"the low-resolution copy needs a patch grid divisible by 4, got h={h}, w={w}: resize frames to "
            "multiples of 56 px (the processor does)"
        )
    p, m, tp = PATCH_SIZE, MERGE_SIZE, TEMPORAL_PATCH_SIZE
    # rows (t, h/m, w/m, m, m) of [C, tp, p, p] -> frames [t, C, tp, h*p, w*p]
    frames = pixel_patches.reshape(t, h // m, w // m, m, m, channels, tp, p, p)
    frames = frames.permute(0, 5, 6, 1, 3, 7, 2, 4, 8).reshape(t, channels * tp, h * p, w * p)
    # The 2x2 windows never straddle a 28 px merge block, so this equals pooling each block on its own.
    small = F.avg_pool2d(frames, kernel_size=2, stride=2)  # [t, C * tp, h/2 * p, w/2 * p]
    small_h, small_w = h // 2, w // 2
    small = small.reshape(t, channels, tp, small_h // m, m, p, small_w // m, m, p)
    small = small.permute(0, 3, 6, 4, 7, 1, 2, 5, 8).reshape(t * small_h * small_w, channels * tp * p * p)
    return small, (t, small_h, small_w)


def euclidean_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`[n, m]` distances between the rows of `a` `[n, d]` and `b` `[m, d]`, as the original computes them:
    `sqrt(|a|^2 + |b|^2 - 2 a.b)` (a rounding below zero gives NaN, which `argmin` then picks, as in the original)."""
    a_sq = (a**2).sum(dim=1, keepdim=True)  # [n, 1]
    b_sq = (b**2).sum(dim=1, keepdim=True)  # [m, 1]
    return torch.sqrt(a_sq + b_sq.T - 2 * (a @ b.T))


@dataclass(frozen=True)
class KMeansResult:
    centroids: torch.Tensor  # [k, d] float32
    labels: torch.Tensor  # [n] long, from the last assignment step
    weights: torch.Tensor  # [k] float32, summed member weights of the last assignment
    degenerate: bool  # fewer distinct points than clusters: the distinct points are the centroids


def weighted_kmeans(
    points: torch.Tensor,
    num_clusters: int,
    weights: torch.Tensor,
    max_iter: int = 10,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> KMeansResult:
    """Weighted k-means as the original runs it (`weighted_kmeans_torch` of `weighted_kmeans_ordered_feature`).

    - Initial centroids: `unique(points, dim=0)[randperm(n_unique)[:K]]` (rows of `unique` in lexicographic
      order); the permutation is drawn from `generator`, or from torch's global generator as in the original.
    - With fewer distinct points than `K`: the distinct points are the centroids, each of weight 1, no iteration.
    - Each iteration assigns points to the nearest centroid, then moves each centroid to the weighted mean of its
      points; it stops once the summed centroid shift is below `tol` (keeping the centroids it assigned with) or
      after `max_iter` iterations (keeping the last means). Labels and weights come from the last assignment.
    - A cluster left empty is re-seeded with a random point, drawn with Python's `random` as in the original (or
      from `generator` when one is given).

    Args:
        points: `[n, d]` float32. weights: `[n]` float32.
    """
    unique = torch.unique(points, dim=0)  # [n_unique, d], rows sorted
    if unique.shape[0] < num_clusters:
        labels = torch.argmin(euclidean_distances(points, unique), dim=1)
        ones = torch.ones(unique.shape[0], dtype=unique.dtype, device=unique.device)
        return KMeansResult(centroids=unique, labels=labels, weights=ones, degenerate=True)

    order = torch.randperm(unique.shape[0], device=points.device, generator=generator)[:num_clusters]
    centroids = unique[order]  # [K, d]
    for _ in range(max_iter):
        labels = torch.argmin(euclidean_distances(points, centroids), dim=1)  # [n]
        weighted_sums = torch.zeros_like(centroids)
        weight_sums = torch.zeros(num_clusters, dtype=points.dtype, device=points.device)
        # One masked sum per cluster, in the original's order, so the means round exactly as there.
        for cluster in range(num_clusters):
            members = labels == cluster
            weighted_sums[cluster] = torch.sum(weights[members, None] * points[members], dim=0)
            weight_sums[cluster] = torch.sum(weights[members])
        filled = weight_sums > 0
        new_centroids = torch.zeros_like(weighted_sums)
        new_centroids[filled] = weighted_sums[filled] / weight_sums[filled, None]
        num_empty = int(num_clusters - filled.sum())
        if num_empty:
            new_centroids[~filled] = points[_random_indices(points.shape[0], num_empty, generator)]
        shift = torch.norm(centroids - new_centroids, dim=1).sum()
        if shift < tol:
            break
        centroids = new_centroids
    return KMeansResult(centroids=centroids, labels=labels, weights=weight_sums, degenerate=False)


def _random_indices(n: int, count: int, generator: torch.Generator | None) -> list[int]:
    if generator is None:
        return [random.randint(0, n - 1) for _ in range(count)]
    return torch.randint(0, n, (count,), generator=generator).tolist()


def cluster_timestamps(labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """`[K]` float32: each cluster's mean member index (the original's Python mean, then float32).

    The original divides by zero on a cluster the last assignment left empty; here such a cluster gets the
    timestamp -1 (it sorts first), a case the released model never meets in practice.
    """
    members: list[list[int]] = [[] for _ in range(num_clusters)]
    for index, label in enumerate(labels.tolist()):
        members[label].append(index)
    means = [sum(m) / len(m) if m else -1.0 for m in members]
    return torch.tensor(means, device=labels.device)


@dataclass(frozen=True)
class ContextSynopsis:
    """The CSM of one video: `features` `[k, tokens_per_patch, D]` in time order, with each entry's summed weight
    `[k]` (float32) and its temporal position `[k]` (long: the rounded mean temporal-patch index)."""

    features: torch.Tensor
    weights: torch.Tensor
    positions: torch.Tensor


def context_synopsis_memory(
    low_features: torch.Tensor,
    num_clusters: int,
    max_iter: int = 10,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> ContextSynopsis:
    """CSM of one video from its low-resolution ViT features `[t, tokens_per_patch, D]` (before the merger).

    With `t <= K` nothing is clustered: every temporal patch is kept, weight 1, position its index. Otherwise the
    temporal patches (flattened to one float32 vector each, weight 1) are clustered into `K` centroids sorted by
    their mean member index (`torch.argsort`, as the original); positions are those means rounded half to even.
    In the degenerate case (fewer distinct patches than `K`) the first `K - n_unique` patches are prepended to the
    sorted distinct patches, as in the original.
    """
    t = low_features.shape[0]
    dtype = low_features.dtype
    if t <= num_clusters:
        weights = torch.ones(t, device=low_features.device)
        positions = torch.arange(t, device=low_features.device)
        return ContextSynopsis(features=low_features, weights=weights, positions=positions)

    frames = low_features.float()  # [t, P, D]
    points = frames.reshape(t, -1)  # [t, P * D]
    ones = torch.ones(t, dtype=points.dtype, device=points.device)
    result = weighted_kmeans(points, num_clusters, ones, max_iter=max_iter, tol=tol, generator=generator)
    found = result.centroids.shape[0]
    timestamps = cluster_timestamps(result.labels, found)  # [found] float32
    order = torch.argsort(timestamps)
    features = result.centroids.reshape(found, *frames.shape[1:])[order]
    weights = result.weights[order]
    timestamps = timestamps[order]
    if result.degenerate:
        pad = num_clusters - found
        features = torch.cat([frames[:pad], features])
        weights = torch.cat([torch.ones(pad, device=weights.device), weights])
        timestamps = torch.cat([torch.arange(pad, device=timestamps.device), timestamps])
    return ContextSynopsis(features=features.to(dtype), weights=weights, positions=timestamps.round().long())


def detail_augmentation_memory(
    full_features: torch.Tensor, low_features: torch.Tensor, synopsis: ContextSynopsis, num_patches: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """DAM of one video: `([n, tokens_per_full_patch, D], positions [n])`, `n = min(t, S)`.

    With `t <= S`, all temporal patches in time order. Otherwise, for the `S` heaviest CSM entries (in descending
    weight order, `torch.argsort(descending=True)` as the original, whose order among equal weights is torch's:
    ties are frequent), the full-resolution features of the temporal patch whose low-resolution features are
    nearest (Euclidean, the original's formula) to the entry. DAM entries are therefore in weight order, not time
    order, and a temporal patch may appear twice.

    Distances are computed in float32 whatever the model dtype (the original computes them in the model dtype).
    """
    t = full_features.shape[0]
    if num_patches == 0:
        return full_features[:0], torch.zeros(0, dtype=torch.long, device=full_features.device)
    if t <= num_patches:
        return full_features, torch.arange(t, device=full_features.device)
    heaviest = torch.argsort(synopsis.weights, descending=True)[:num_patches]
    centroids = synopsis.features[heaviest].reshape(num_patches, -1).float()  # [S, P * D]
    distances = euclidean_distances(centroids, low_features.reshape(t, -1).float())  # [S, t]
    nearest = torch.argmin(distances, dim=1)  # [S]
    return full_features[nearest], nearest


def csm_grid(grid_thw: tuple[int, int, int], num_clusters: int, pool: int) -> tuple[int, int, int]:
    """Patch grid `(k, h', w')` of a video's CSM (the original's `get_real_grid_thw`)."""
    t, h, w = grid_thw
    if pool == 2:
        h, w = h // 2 + (h // 2) % 2, w // 2 + (w // 2) % 2
    return min(t, num_clusters), h, w


def dam_grid(grid_thw: tuple[int, int, int], num_patches: int) -> tuple[int, int, int]:
    """Patch grid `(n, h, w)` of a video's DAM (the original's `get_spatial_real_grid_thw`)."""
    t, h, w = grid_thw
    return min(t, num_patches), h, w


def num_memory_tokens(grid_thw: tuple[int, int, int], num_clusters: int, num_patches: int, pool: int) -> int:
    """Language-model tokens of one video's memory, DAM then CSM (after the 2x2 patch merger)."""
    merge = MERGE_SIZE * MERGE_SIZE
    dam, csm = dam_grid(grid_thw, num_patches), csm_grid(grid_thw, num_clusters, pool)
    return dam[0] * dam[1] * dam[2] // merge + csm[0] * csm[1] * csm[2] // merge
