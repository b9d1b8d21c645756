"""All frames in one call on a fresh memory reproduce the released code's offline consolidation.

The reference (`reference_original.py`) restates the original algorithm naively from docs/original_model.md and
is run after `torch.manual_seed(s)`, as the original would be; the package runs with `memory_seed=s`.
"""

import pytest
import torch

from flash_vstream_hf import FlashVStreamConfig
from flash_vstream_hf.modeling.abstract_memory_attention import FlashVStreamAbstractMemoryAttention
from flash_vstream_hf.modeling.star_memory import StarLayout, consolidate, empty_state, pool_spatial, read_out
from flash_vstream_hf.tiny import tiny_config, tiny_model

from .reference_original import offline_memory


def patch_features(frames: int, grid: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(frames, grid * grid, dim, generator=generator)


# tiny layout: N_spa 1, N_tem 5, N_abs 4, N_ret 2 -> k-means from 7 frames, abstract chunks from 6
@pytest.mark.parametrize("frames", [1, 2, 3, 6, 7, 10, 14, 23])
@pytest.mark.parametrize("seed", [0, 11])
def test_tiny_model_matches_the_original_offline_memory(frames, seed):
    config = tiny_config(memory_seed=seed)
    model = tiny_model(config, seed=seed)
    features = patch_features(frames, config.patch_grid_size, config.vision_config.hidden_size, seed)
    memory = model.update_memory_from_features(features[None])
    with torch.no_grad():
        ours = model.model.read_memory(memory)[0]
        torch.manual_seed(seed)
        attention = model.model.abstract_memory_attention
        expected = offline_memory(features, config, attention.q_proj, attention.k_proj)
    assert ours.shape == expected.shape == (memory.get_seq_length(), config.vision_config.hidden_size)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frames", [20, 60])
def test_released_layout_matches_the_original_offline_memory(frames):
    """CLIP ViT-L/14 shapes (16x16 patches of 1024-d features), 681 tokens: 20 frames need no k-means, 60 do."""
    config = FlashVStreamConfig(memory_seed=3)
    layout = StarLayout.from_config(config)
    torch.manual_seed(0)
    attention = FlashVStreamAbstractMemoryAttention(config)
    features = patch_features(frames, 16, 1024, seed=frames)
    with torch.no_grad():
        state = empty_state(layout, 1, "cpu", torch.float32)
        state = consolidate(state, layout, pool_spatial(features, 8)[None], attention)
        ours = read_out(state, layout, attention)[0]
        torch.manual_seed(3)
        expected = offline_memory(features, config, attention.q_proj, attention.k_proj)
    assert ours.shape[0] == expected.shape[0] == layout.num_tokens(frames)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_retrieval_repeats_the_original_index_bug():
    """With k-means, the original's key frames are frames whose *indices* are the largest cluster ids (bug B1 in
    docs/original_model.md)."""
    config = tiny_config(memory_seed=4, temporal_length=3, retrieved_length=1)
    model = tiny_model(config)
    features = patch_features(12, config.patch_grid_size, config.vision_config.hidden_size, seed=4)
    memory = model.update_memory_from_features(features[None])
    state, layout = memory.state, model.star_layout
    largest_cluster = int(torch.argsort(state.temporal_sizes[0], descending=True)[0])
    tokens = model.model.read_memory(memory)[0]
    start = layout.counts(12).abstract * layout.abstract_tokens + 3 * layout.temporal_tokens
    key_frame = tokens[start : start + layout.spatial_tokens]
    assert torch.equal(key_frame, pool_spatial(features[largest_cluster], config.spatial_pool_size))
