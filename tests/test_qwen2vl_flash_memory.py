"""Flash Memory maths of Flash-VStream v2, one function at a time, against values worked out by hand from the
original (Flash-VStream-Qwen, models/compress_functions.py and models/vstream_qwen2vl_model.py)."""

import random

import pytest
import torch
import torch.nn.functional as F

from flash_vstream_hf.qwen2vl.flash_memory import (
    ContextSynopsis,
    cluster_timestamps,
    context_synopsis_memory,
    detail_augmentation_memory,
    euclidean_distances,
    num_memory_tokens,
    pool_patches_in_pixel_space,
    weighted_kmeans,
)


def patchify(frames: torch.Tensor) -> torch.Tensor:
    """Qwen2-VL's patch rows of frames `[t, C, 2, H, W]`: rows (t, H/28, W/28, 2, 2), each `[C, 2, 14, 14]`."""
    t, c, tp, height, width = frames.shape
    h, w = height // 14, width // 14
    x = frames.reshape(t, c, tp, h // 2, 2, 14, w // 2, 2, 14)
    return x.permute(0, 3, 6, 4, 7, 1, 2, 5, 8).reshape(t * h * w, c * tp * 14 * 14)


def test_pixel_space_pooling_is_a_2x2_average_of_every_frame():
    frames = torch.randn(3, 3, 2, 56, 112)  # t=3, grid 4x8
    low, grid = pool_patches_in_pixel_space(patchify(frames), (3, 4, 8))
    expected = patchify(F.avg_pool2d(frames.reshape(3, 6, 56, 112), 2).reshape(3, 3, 2, 28, 56))
    assert grid == (3, 2, 4)
    torch.testing.assert_close(low, expected, rtol=0, atol=0)


def test_pixel_space_pooling_refuses_a_grid_the_merger_cannot_cut():
    with pytest.raises(ValueError, match="multiples of 56"):
        pool_patches_in_pixel_space(torch.zeros(1 * 2 * 6, 1176), (1, 2, 6))


def test_distances_use_the_expanded_formula():
    a, b = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    torch.testing.assert_close(euclidean_distances(a, b), torch.tensor([[0.0], [5.0]]))


def test_kmeans_draws_its_init_from_unique_rows_with_one_randperm():
    points = torch.tensor([[5.0], [0.0], [5.1], [0.1], [9.0], [9.1]])
    torch.manual_seed(3)
    result = weighted_kmeans(points, 3, torch.ones(6))
    state_after = torch.get_rng_state()
    torch.manual_seed(3)
    order = torch.randperm(6)[:3]  # the only draw: over the 6 unique rows, sorted
    assert torch.equal(torch.get_rng_state(), state_after)
    assert sorted(result.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert result.weights.tolist() == [2.0, 2.0, 2.0]
    assert not result.degenerate
    del order


def test_kmeans_weights_move_centroids_towards_heavy_points():
    points = torch.tensor([[0.0], [1.0], [10.0]])
    result = weighted_kmeans(points, 2, torch.tensor([3.0, 1.0, 1.0]), generator=torch.Generator().manual_seed(0))
    centroids = sorted(result.centroids.flatten().tolist())
    assert centroids == pytest.approx([0.25, 10.0])
    assert sorted(result.weights.tolist()) == [1.0, 4.0]


def test_kmeans_with_fewer_distinct_points_than_clusters_keeps_the_distinct_points():
    points = torch.tensor([[1.0], [1.0], [2.0], [2.0]])
    result = weighted_kmeans(points, 3, torch.ones(4))
    assert result.degenerate
    assert result.centroids.flatten().tolist() == [1.0, 2.0]
    assert result.labels.tolist() == [0, 0, 1, 1]
    assert result.weights.tolist() == [1.0, 1.0]


def test_cluster_timestamps_are_member_means():
    assert cluster_timestamps(torch.tensor([1, 0, 0, 1, 2]), 3).tolist() == [1.5, 1.5, 4.0]


def test_csm_keeps_every_patch_up_to_k():
    low = torch.randn(3, 4, 8)
    synopsis = context_synopsis_memory(low, num_clusters=3)
    assert synopsis.features is low
    assert synopsis.weights.tolist() == [1.0, 1.0, 1.0]
    assert synopsis.positions.tolist() == [0, 1, 2]


def test_csm_orders_clusters_by_time_and_rounds_half_to_even():
    # Four well separated scenes of two temporal patches each: clusters {0,1} {2,3} {4,5} {6,7}, listed out of
    # time order in feature space so that sorting matters.
    scene = torch.tensor([3.0, 0.0, 2.0, 1.0]).repeat_interleave(2) * 100
    low = (scene[:, None, None] + torch.arange(8.0)[:, None, None] * 0.01).expand(8, 2, 3).contiguous()
    torch.manual_seed(0)
    synopsis = context_synopsis_memory(low, num_clusters=4)
    # means 0.5, 2.5, 4.5, 6.5 round half to even
    assert synopsis.positions.tolist() == [0, 2, 4, 6]
    assert synopsis.weights.tolist() == [2.0, 2.0, 2.0, 2.0]
    torch.testing.assert_close(synopsis.features[:, 0, 0], torch.tensor([300.005, 0.025, 200.045, 100.065]))


def test_csm_degenerate_video_pads_with_its_first_patches():
    low = torch.zeros(5, 1, 2)
    low[3:] = 1.0  # two distinct patches, K = 3
    synopsis = context_synopsis_memory(low, num_clusters=3)
    assert synopsis.features[:, 0, 0].tolist() == [0.0, 0.0, 1.0]  # pad (patch 0), then unique rows by time
    assert synopsis.positions.tolist() == [0, 1, 4]  # 0; mean(0,1,2) = 1; mean(3,4) = 3.5 -> 4
    assert synopsis.weights.tolist() == [1.0, 1.0, 1.0]


def test_dam_takes_the_nearest_patch_of_the_heaviest_clusters_in_weight_order():
    low = torch.tensor([0.0, 1.0, 5.0, 9.0, 10.0])[:, None, None]
    full = torch.arange(5.0)[:, None, None] * 10
    synopsis = ContextSynopsis(
        features=torch.tensor([0.4, 5.2, 9.6])[:, None, None],
        weights=torch.tensor([2.0, 1.0, 3.0]),
        positions=torch.tensor([0, 2, 4]),
    )
    detail, positions = detail_augmentation_memory(full, low, synopsis, num_patches=2)
    assert positions.tolist() == [4, 0]  # weights 3 then 2: nearest to 9.6 is patch 4, to 0.4 patch 0
    assert detail.flatten().tolist() == [40.0, 0.0]


def test_dam_keeps_every_patch_up_to_s_and_nothing_with_s_zero():
    full, low = torch.randn(2, 4, 3), torch.randn(2, 1, 3)
    synopsis = context_synopsis_memory(low, 3)
    detail, positions = detail_augmentation_memory(full, low, synopsis, 2)
    assert detail is full and positions.tolist() == [0, 1]
    detail, positions = detail_augmentation_memory(full, low, synopsis, 0)
    assert detail.shape[0] == 0 and positions.numel() == 0


def test_dam_ties_follow_torch_argsort():
    # All weights equal (no clustering, t <= K): the order is whatever torch's argsort gives, as in the original.
    weights = torch.ones(20)
    low = torch.randn(20, 1, 4)
    synopsis = ContextSynopsis(features=low, weights=weights, positions=torch.arange(20))
    _, positions = detail_augmentation_memory(low * 2, low, synopsis, 5)
    assert positions.tolist() == torch.argsort(weights, descending=True)[:5].tolist()


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ((120, 32, 32), 30 * 256 + 60 * 64),  # 240 frames at 448x448: the released memory, 11,520 tokens
        ((20, 4, 4), 20 * 4 + 20 * 1),  # t <= S and t <= K: every temporal patch in both memories
        ((1, 4, 12), 12 + 3),  # DAM 4x12 patches -> 12 tokens; CSM 2x6 -> 3 tokens
    ],
)
def test_memory_token_counts(grid, expected):
    assert num_memory_tokens(grid, 60, 30, 2) == expected


def test_an_empty_cluster_is_reseeded_from_python_random_as_the_original():
    # The middle point has weight 0, so its cluster weighs 0 after the first assignment and is re-seeded.
    points = torch.tensor([[0.0], [1.0], [2.0]])
    random.seed(0)
    before = random.getstate()
    weighted_kmeans(points, 3, torch.tensor([1.0, 0.0, 1.0]))
    assert random.getstate() != before
    before = random.getstate()
    weighted_kmeans(points, 3, torch.tensor([1.0, 0.0, 1.0]), generator=torch.Generator().manual_seed(1))
    assert random.getstate() == before  # with a generator, only the generator is drawn from
