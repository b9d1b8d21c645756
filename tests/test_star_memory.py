"""The STAR memory maths, one function at a time, against values worked out by hand from docs/original_model.md."""

import pytest
import torch

from flash_vstream_hf import FlashVStreamConfig
from flash_vstream_hf.modeling.star_memory import (
    StarLayout,
    abstract_update,
    consolidate,
    empty_state,
    nearest_rows,
    pool_spatial,
    read_out,
    squared_distances,
    weighted_kmeans,
)
from flash_vstream_hf.tiny import tiny_config

RELEASED = StarLayout.from_config(FlashVStreamConfig())


def layout(**overrides) -> StarLayout:
    return StarLayout.from_config(tiny_config(**overrides))


def uniform_attention(memory, frames):
    """Stand-in for the learned attention: every memory row attends equally to every new token."""
    return torch.full((memory.shape[0], memory.shape[1], frames.shape[1]), 1.0 / frames.shape[1])


# -- token counts (docs/original_model.md, "Token order and counts") ----------------------------------------


@pytest.mark.parametrize("frames", range(1, 31))
def test_released_token_count_formula(frames):
    past = frames - 1
    expected = 64 if past == 0 else (17 * past + 64 * min(3, past) + 64 if past <= 25 else 681)
    assert RELEASED.num_tokens(frames) == expected


def test_token_count_reaches_681_at_26_frames_and_stays():
    assert [RELEASED.num_tokens(t) for t in (25, 26, 27, 10_000)] == [664, 681, 681, 681]
    assert RELEASED.num_tokens(0) == 0


def test_counts_of_a_small_layout():
    small = layout(spatial_length=2, temporal_length=3, abstract_length=2, retrieved_length=2)
    counts = small.counts(9)  # 2 current, 7 past
    assert (counts.current, counts.past, counts.temporal, counts.abstract, counts.retrieved) == (2, 7, 3, 2, 2)
    assert counts.pending == (7 - 2) % 2 == 1
    assert small.counts(1).past == 0 and small.counts(1).current == 1


def test_zero_lengths_disable_their_memory():
    no_long_term = layout(temporal_length=0, abstract_length=0)
    # only the current frame is left; no retrieval without a temporal memory (as the original)
    assert no_long_term.num_tokens(50) == no_long_term.spatial_tokens
    frames = spatial_frames(no_long_term, 50)
    tokens = read_out(feed(no_long_term, frames, 7), no_long_term, uniform_attention)
    assert torch.equal(tokens, frames[:, -1:].flatten(1, 2))  # the read-out is the newest frame, nothing else


# -- pooling (docs/original_model.md, "Spatial pooling") -----------------------------------------------------


def test_pool_spatial_averages_row_major_windows():
    grid = torch.arange(16.0).view(1, 16, 1)  # a 4x4 grid holding 0..15 row by row
    pooled = pool_spatial(grid, 2)
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # means of the four 2x2 windows
    assert pool_spatial(grid, 1).flatten().tolist() == [7.5]
    assert pool_spatial(grid, 4) is grid


def test_pool_spatial_rejects_bad_grids():
    with pytest.raises(ValueError, match="square"):
        pool_spatial(torch.zeros(1, 15, 2), 1)
    with pytest.raises(ValueError, match="does not divide"):
        pool_spatial(torch.zeros(1, 16, 2), 3)


# -- distances and k-means (docs/original_model.md, "Temporal memory") --------------------------------------


def test_squared_distances_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    points, centroids = torch.randn(2, 7, 33, generator=generator), torch.randn(2, 3, 33, generator=generator)
    brute = ((points[:, :, None] - centroids[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(squared_distances(points, centroids), brute, rtol=1e-5, atol=1e-4)


def test_kmeans_initialises_with_randperm_of_the_generator():
    points = torch.randn(1, 9, 4)
    # tol so large that the first iteration stops: the initial centroids come back unchanged
    centroids, _ = weighted_kmeans(points, torch.ones(1, 9), 3, torch.Generator().manual_seed(7), tol=1e9)
    initial = torch.randperm(9, generator=torch.Generator().manual_seed(7))[:3]
    assert torch.equal(centroids[0], points[0, initial])
    torch.manual_seed(7)  # the original draws from the global generator: same seed, same initial centroids
    assert torch.equal(torch.randperm(9)[:3], initial)


def test_kmeans_recovers_separated_clusters_with_their_sizes():
    generator = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    counts = [5, 3, 2]
    points = torch.cat([c + 0.01 * torch.randn(n, 2, generator=generator) for c, n in zip(centres, counts)])
    centroids, sizes = weighted_kmeans(points[None], torch.ones(1, 10), 3, torch.Generator().manual_seed(3), 20)
    order = sizes[0].argsort(descending=True)
    assert sizes[0, order].tolist() == [5.0, 3.0, 2.0]
    for centroid, members in zip(centroids[0, order], points.split(counts)):
        torch.testing.assert_close(centroid, members.mean(0))


def test_kmeans_weights_pull_centroids_and_count_as_sizes():
    # two points in one cluster: a centroid standing for 9 frames at 0 and one new frame at 10
    points = torch.tensor([[[0.0], [10.0], [100.0]]])
    weights = torch.tensor([[9.0, 1.0, 1.0]])
    centroids, sizes = weighted_kmeans(points, weights, 2, torch.Generator().manual_seed(0), max_iter=10)
    assert sorted(sizes[0].tolist()) == [1.0, 10.0]
    assert sorted(centroids[0].flatten().tolist()) == pytest.approx([1.0, 100.0])  # (9 * 0 + 10) / 10


def test_kmeans_one_iteration_keeps_the_update_and_its_assignment_sizes():
    points = torch.tensor([[[0.0], [1.0], [9.0], [10.0]]])
    generator = torch.Generator().manual_seed(0)
    first = torch.randperm(4, generator=torch.Generator().manual_seed(0))[:2]
    centroids, sizes = weighted_kmeans(points, torch.ones(1, 4), 2, generator, max_iter=1, tol=0.0)
    start = points[0, first].flatten()
    labels = (points[0] - start).abs().argmin(-1)
    expected = torch.stack([points[0, labels == k].mean() for k in range(2)])
    assert centroids[0].flatten().tolist() == pytest.approx(expected.tolist())
    assert sizes[0].tolist() == [float((labels == k).sum()) for k in range(2)]


def test_kmeans_batch_equals_one_set_at_a_time():
    generator = torch.Generator().manual_seed(5)
    points = torch.randn(3, 12, 6, generator=generator)
    weights = torch.rand(3, 12, generator=generator) + 0.5
    batched, batched_sizes = weighted_kmeans(points, weights, 4, torch.Generator().manual_seed(9))
    shared = torch.Generator().manual_seed(9)  # sets draw their initialisation one after the other
    for b in range(3):
        single, single_sizes = weighted_kmeans(points[b : b + 1], weights[b : b + 1], 4, shared)
        torch.testing.assert_close(batched[b], single[0])
        torch.testing.assert_close(batched_sizes[b], single_sizes[0])


def test_kmeans_reseeds_empty_clusters_without_nan():
    points = torch.ones(1, 5, 3)  # identical points: every point joins cluster 0, the others are empty
    centroids, sizes = weighted_kmeans(points, torch.ones(1, 5), 3, torch.Generator().manual_seed(0))
    assert torch.equal(centroids, points[:, :3])  # empty clusters re-seeded from the points (not left at zero)
    assert sizes[0].tolist() == [5.0, 0.0, 0.0]


def test_nearest_rows_takes_the_first_of_equal_candidates():
    candidates = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [0.0, 0.0], [1.0, 1.0]]])
    queries = torch.tensor([[[0.0, 0.0], [0.9, 0.9], [5.0, 5.0]]])
    assert nearest_rows(queries, candidates).tolist() == [[0, 3, 1]]


# -- abstract memory (docs/original_model.md, "Abstract memory") --------------------------------------------


def test_abstract_update_with_uniform_attention_mixes_in_the_chunk_mean():
    memory = torch.randn(2, 3, 1, 4)
    chunk = torch.randn(2, 5, 1, 4)
    updated = abstract_update(memory, chunk, uniform_attention, update_ratio=0.2)
    expected = 0.8 * memory + 0.2 * chunk.mean(1, keepdim=True)
    torch.testing.assert_close(updated, expected)


def test_abstract_update_of_one_frame_is_an_ema_whatever_the_projections():
    from flash_vstream_hf.modeling.abstract_memory_attention import FlashVStreamAbstractMemoryAttention

    attention = FlashVStreamAbstractMemoryAttention(tiny_config())
    memory, frame = torch.randn(1, 4, 1, 64), torch.randn(1, 1, 1, 64)
    with torch.no_grad():
        updated = abstract_update(memory, frame, attention, update_ratio=0.2)
    torch.testing.assert_close(updated, 0.8 * memory + 0.2 * frame)


# -- consolidation and read-out -------------------------------------------------------------------------------


def spatial_frames(small: StarLayout, count: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, count, small.spatial_tokens, small.feature_size, generator=generator)


def feed(small: StarLayout, frames: torch.Tensor, chunk: int):
    state = empty_state(small, frames.shape[0], "cpu", frames.dtype)
    for start in range(0, frames.shape[1], chunk):
        state = consolidate(state, small, frames[:, start : start + chunk], uniform_attention)
    return state


def test_frames_reach_long_term_memory_only_when_they_leave_the_window():
    small = layout(spatial_length=2)
    frames = spatial_frames(small, 3)
    state = feed(small, frames[:, :2], 2)
    assert small.counts(state.frames_seen).temporal == 0
    assert torch.equal(state.current, frames[:, :2])
    state = consolidate(state, small, frames[:, 2:], uniform_attention)
    assert torch.equal(state.current, frames[:, 1:3])
    torch.testing.assert_close(state.temporal[:, 0], pool_spatial(frames[:, 0], small.temporal_pool_size))
    torch.testing.assert_close(state.abstract[:, 0], pool_spatial(frames[:, 0], 1))


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_any_chunking_gives_the_offline_abstract_memory(chunk):
    small = layout()
    frames = spatial_frames(small, 23)
    offline, streamed = feed(small, frames, 23), feed(small, frames, chunk)
    for name in ("abstract", "abstract_pending", "current", "key_frames"):
        assert torch.equal(getattr(offline, name), getattr(streamed, name)), name
    assert offline.frames_seen == streamed.frames_seen == 23


def test_streamed_temporal_sizes_count_every_past_frame_once():
    small = layout()
    state = feed(small, spatial_frames(small, 40), 1)
    assert state.temporal_sizes.sum().item() == 39  # 40 frames, 1 still in the spatial window
    assert torch.isfinite(state.temporal).all()


def test_original_retrieval_keeps_the_first_frames_and_ranks_them_as_argsort_does():
    small = layout(temporal_length=16, retrieved_length=3)
    frames = spatial_frames(small, 12)
    state = feed(small, frames, 4)
    tokens = read_out(state, small, uniform_attention)
    start = small.abstract_length * small.abstract_tokens + 11 * small.temporal_tokens
    retrieved = tokens[:, start : start + 3 * small.spatial_tokens].view(1, 3, small.spatial_tokens, -1)
    order = torch.argsort(torch.ones(11), descending=True)[:3]  # all sizes are 1 before clustering
    assert torch.equal(retrieved, frames[:, order])


def test_paper_retrieval_returns_frames_of_the_largest_clusters():
    small = layout(retrieval_mode="paper", temporal_length=3, retrieved_length=1, abstract_length=2)
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(3, small.spatial_tokens, small.feature_size, generator=generator) * 10
    sequence = [0, 1, 0, 2, 0, 1, 0, 0, 2, 0, 0]  # pattern 0 dominates
    frames = torch.stack([patterns[p] + 0.01 * torch.randn(patterns[p].shape, generator=generator) for p in sequence])
    state = feed(small, frames[None], 1)
    tokens = read_out(state, small, uniform_attention)
    counts = small.counts(state.frames_seen)
    start = counts.abstract * small.abstract_tokens + counts.temporal * small.temporal_tokens
    key_frame = tokens[0, start : start + small.spatial_tokens]
    past = frames[:-1]
    assert any(torch.equal(key_frame, f) for f in past), "a key frame is a frame that was seen"
    assert (key_frame - patterns[0]).abs().max() < 0.1  # ... from the largest cluster


def test_read_out_order_is_abstract_temporal_retrieved_current():
    small = layout(retrieval_mode="paper")
    frames = spatial_frames(small, 9)
    state = feed(small, frames, 9)
    # mark every segment with its own constant so positions can be checked
    state = state.replace(
        abstract=torch.full_like(state.abstract, 1.0),
        temporal=torch.full_like(state.temporal, 2.0),
        key_frames=torch.full_like(state.key_frames, 3.0),
        current=torch.full_like(state.current, 4.0),
    )
    tokens = read_out(state, small, uniform_attention)[0, :, 0]
    counts = small.counts(9)
    expected = (
        [1.0] * (counts.abstract * small.abstract_tokens)
        + [2.0] * (counts.temporal * small.temporal_tokens)
        + [3.0] * (counts.retrieved * small.spatial_tokens)
        + [4.0] * (counts.current * small.spatial_tokens)
    )
    assert counts.pending == 0 and tokens.tolist() == expected
    assert tokens.shape[0] == small.num_tokens(9)


def test_pending_abstract_frames_are_applied_at_read_out_only():
    small = layout(abstract_length=4)
    frames = spatial_frames(small, 7)  # 6 past frames: 4 fill the memory, 2 wait in a chunk
    state = feed(small, frames, 7)
    assert small.counts(7).pending == 2
    assert torch.equal(state.abstract, pool_spatial(frames[:, :4], 1))
    tokens = read_out(state, small, uniform_attention)
    expected = abstract_update(state.abstract, pool_spatial(frames[:, 4:6], 1), uniform_attention, 0.2)
    torch.testing.assert_close(tokens[:, :4], expected.flatten(1, 2))


def test_state_tensors_are_never_modified_in_place():
    small = layout()
    state = feed(small, spatial_frames(small, 8), 8)
    before = {name: t.clone() for name, t in state.tensors().items()}
    consolidate(state, small, spatial_frames(small, 5, seed=1), uniform_attention)
    for name, tensor in state.tensors().items():
        assert torch.equal(tensor, before[name]), name
