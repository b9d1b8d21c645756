"""A deliberately naive re-statement of the released Flash-VStream offline memory consolidation (and, below, of
the rest of its question path: prompt, tokenisation, vision features, splicing and the Llama forward).

Written from docs/original_model.md, "Spatial pooling", "Spatial memory", "Temporal memory", "Retrieval",
"Abstract memory" and "Token order and counts", in the original's style: per-sample loops, the global torch RNG
for the k-means initialisation, `[T, K, F]` distance tensors, one Python loop per cluster, and the
cluster-id-indexes-frames retrieval (bug B1). The package's fast implementation must agree with it; nothing here
is imported by the package.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

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


# ----------------------------------------------------------------------------------------------------------------
# The rest of the original question path, for end-to-end parity of converted checkpoints: prompt, chunk-wise
# tokenisation, CLIP preprocessing and features, memory (above), projection, splicing at the -200 sentinel and the
# Llama forward (docs/original_model.md, "Prompt", "Tokenisation", "CLIP preprocessing", "Frame features",
# "Placeholder and splicing"). As naive as the code it restates.
# ----------------------------------------------------------------------------------------------------------------

IMAGE_TOKEN_INDEX = -200
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def vicuna_v1_prompt(turns, system: str) -> str:
    """`conv_vicuna_v1.get_prompt()` (separator style TWO, sep " ", sep2 "</s>").

    Args:
        turns: `(role, message)` pairs, roles "USER"/"ASSISTANT"; a `None` message is the pending reply.
    """
    seps = [" ", "</s>"]
    prompt = system + seps[0]
    for i, (role, message) in enumerate(turns):
        if message:
            prompt += role + ": " + message + seps[i % 2]
        else:
            prompt += role + ":"
    return prompt


def slow_llama_tokenize(sp, text: str, special_tokens: dict[str, int]) -> list[int]:
    """`LlamaTokenizer(use_fast=False)(text).input_ids` of transformers 4.31 in legacy mode.

    Special-token strings are split off; every other piece is `sp.encode(piece)` on its own, so each gets
    sentencepiece's dummy `▁` prefix; BOS goes in front (`add_bos_token=True`). (4.31 also strips whitespace
    next to special tokens that are not `AddedToken`s; the vicuna prompts here have none there.)
    """
    pattern = "(" + "|".join(re.escape(token) for token in special_tokens) + ")"
    ids = [sp.bos_id()]
    for piece in re.split(pattern, text) if special_tokens else [text]:
        if piece in special_tokens:
            ids.append(special_tokens[piece])
        elif piece:
            ids.extend(sp.encode(piece))
    return ids


def tokenizer_image_token(prompt: str, tokenize, bos_id: int) -> list[int]:
    """`mm_utils.tokenizer_image_token`: the chunks around `<image>` are tokenised one by one; the first chunk
    keeps its BOS, later chunks lose theirs, and one -200 sentinel sits between chunks."""
    chunks = [tokenize(chunk) for chunk in prompt.split("<image>")]
    offset = 1 if chunks and chunks[0] and chunks[0][0] == bos_id else 0
    ids = [bos_id] if offset else []
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


def preprocess_frames(frames, size: int) -> torch.Tensor:
    """`CLIPImageProcessor` of openai/clip-vit-large-patch14 at `size` px on each frame: RGB, shortest edge to
    `size` (bicubic), centre crop, /255, normalise. `[T, 3, size, size]`."""
    from transformers import CLIPImageProcessorPil
    from transformers.image_utils import PILImageResampling

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=PILImageResampling.BICUBIC,
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD,
    )  # fmt: skip
    return processor(list(frames), return_tensors="pt")["pixel_values"]


def clip_patch_features(clip, pixel_values: torch.Tensor, select_layer: int) -> torch.Tensor:
    """`CLIPVisionTower.forward` with `select_feature="patch"`: `[T, g*g, D]`."""
    return clip(pixel_values, output_hidden_states=True).hidden_states[select_layer][:, 1:]


def original_star_config(original: dict) -> SimpleNamespace:
    """The memory settings `compress_temporal_features` reads, with its `getattr` defaults (docs/original_model.md,
    "Config fields"), under the names `offline_memory` uses."""
    return SimpleNamespace(
        spatial_pool_size=original.get("compress_size", 1),
        temporal_pool_size=original.get("compress_long_memory_size", 1),
        abstract_pool_size=original.get("compress_Turing_memory_size", 1),
        spatial_length=original.get("video_current_memory_length", 1),
        temporal_length=original.get("video_long_memory_length", 10),
        abstract_length=original.get("video_Turing_memory_length", 10),
        abstract_update_ratio=original.get("compress_Turing_update_ratio", 0.2),
        retrieved_length=3,
        kmeans_max_iter=10,
        kmeans_tol=1e-4,
    )


def original_last_logits(llama, projector, input_ids: list[int], memory: torch.Tensor | None) -> torch.Tensor:
    """`VStreamLlamaForCausalLM.forward` for one sample: the projected memory `[N, D]` replaces the -200
    sentinel (`prepare_inputs_labels_for_multimodal`), or a plain Llama forward without images. Returns the
    logits of the last position, `[vocab]`."""
    ids = torch.tensor(input_ids)
    if memory is None:
        return llama(input_ids=ids[None]).logits[0, -1]
    sentinel = int(torch.where(ids == IMAGE_TOKEN_INDEX)[0][0])
    embed = llama.model.embed_tokens
    sequence = torch.cat([embed(ids[:sentinel]), projector(memory), embed(ids[sentinel + 1 :])])
    positions = torch.arange(sequence.shape[0])[None]
    return llama(inputs_embeds=sequence[None], position_ids=positions).logits[0, -1]
