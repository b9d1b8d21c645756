"""A deliberately naive re-statement of the released Flash-VStream offline memory consolidation.

Written from the spec (`shared/reference/flash_vstream_v1.md` §2.1-§2.6), in the original's style: per-sample
loops, the global torch RNG for the k-means initialisation, `[T, K, F]` distance tensors, one Python loop per
cluster, and the cluster-id-indexes-frames retrieval (bug B1). The package's fast implementation must agree
with it; nothing here is imported by the package.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pool(features: torch.Tensor, size: int) -> torch.Tensor:
    """`compress_spatial_features`: [T, p*p, D] -> [T, size*size, D]."""
    side = round(math.sqrt(features.shape[1]))
    if side == size:
        return features
    if size == 1:
        return features.mean(dim=1, keepdim=True)
    grid = features.view(-1, side, side, features.shape[-1]).permute(0, 3, 1, 2)
    pooled = F.avg_pool2d(grid, (side // size, side // size)).permute(0, 2, 3, 1)
    return pooled.reshape(-1, size * size, features.shape[-1])


def kmeans(points: torch.Tensor, num_clusters: int, max_iter: int, tol: float):
    """`weighted_kmeans_torch` with all weights 1; initialised from the *global* RNG like the original."""
    weights = torch.ones(points.shape[0], dtype=points.dtype)
    centroids = points[torch.randperm(points.shape[0])[:num_clusters]]
    for _ in range(max_iter):
        distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1).sqrt()  # [T, K]
        labels = distances.argmin(dim=1)
        sums = torch.zeros_like(centroids)
        sizes = torch.zeros(num_clusters, dtype=points.dtype)
        for cluster in range(num_clusters):
            members = labels == cluster
            sums[cluster] = (weights[members, None] * points[members]).sum(0)
            sizes[cluster] = weights[members].sum()
        filled = sizes > 0
        assert filled.all(), "the reference does not model empty-cluster re-seeding (Python RNG in the original)"
        new_centroids = torch.zeros_like(sums)
        new_centroids[filled] = sums[filled] / sizes[filled, None]
        if torch.norm(centroids - new_centroids, dim=1).sum() < tol:
            break
        centroids = new_centroids
    return centroids, sizes


def abstract_memory(frames: torch.Tensor, length: int, q_proj, k_proj, ratio: float) -> torch.Tensor:
    """`attention_feature` with the `attention` update: [L, P, D] -> [min(L, length), P, D]."""
    count, tokens, dim = frames.shape
    if count <= length:
        return frames
    memory = frames[:length].reshape(length * tokens, dim)
    for start in range(length, count, length):
        chunk = frames[start : start + length].reshape(-1, dim)
        scores = q_proj(memory) @ k_proj(chunk).T / math.sqrt(q_proj.out_features)
        weight = scores.softmax(-1) * ratio
        decay = weight.sum(dim=1, keepdim=True)
        memory = memory * (1 - decay) + weight @ chunk
    return memory.reshape(length, tokens, dim)


def offline_memory(patch_features: torch.Tensor, config, q_proj, k_proj) -> torch.Tensor:
    """The memory tokens the original feeds the projector for one video.

    Args:
        patch_features: `[T, g*g, D]` CLIP features without CLS (the original's feature files).
        config: a `FlashVStreamConfig` (its STAR fields).
    Returns:
        `[N, D]`, `[abstract | temporal | retrieved | current]`.
    """
    frames = pool(patch_features, config.spatial_pool_size)
    current_count = min(config.spatial_length, frames.shape[0])
    current = frames[frames.shape[0] - current_count :]
    past = frames[: frames.shape[0] - current_count]
    long_memory = pool(past, config.temporal_pool_size)
    turing_memory = pool(past, config.abstract_pool_size)

    if config.temporal_length == 0 or long_memory.shape[0] == 0:
        temporal = long_memory[:0]
    else:
        count = long_memory.shape[0]
        if count <= config.temporal_length:
            temporal, weight = long_memory, torch.ones(count, dtype=long_memory.dtype)
        else:
            flat = long_memory.reshape(count, -1)
            centroids, weight = kmeans(flat, config.temporal_length, config.kmeans_max_iter, config.kmeans_tol)
            temporal = centroids.view(config.temporal_length, *long_memory.shape[1:])
        order = torch.argsort(weight, descending=True)
        key_centroids = long_memory[order][: config.retrieved_length]  # B1: cluster ids index frames
        distances = ((long_memory[:, None] - key_centroids[None]) ** 2).sum(3).sum(2).sqrt()
        current = torch.cat([past[distances.argmin(dim=0)], current])

    if config.abstract_length == 0 or turing_memory.shape[0] == 0:
        abstract = turing_memory[:0]
    else:
        abstract = abstract_memory(
            turing_memory, config.abstract_length, q_proj, k_proj, config.abstract_update_ratio
        )
    return torch.cat([abstract.flatten(0, 1), temporal.flatten(0, 1), current.flatten(0, 1)])
