"""Fault injection on v2's memory: a frame with NaN or inf pixels or features is refused before it reaches the
memory (one would poison its k-means centroids for good), and the stream goes on."""

import pytest
import torch

from flash_vstream_hf.qwen2vl import FlashVStreamQwen2VLForConditionalGeneration
from flash_vstream_hf.qwen2vl.flash_memory import num_memory_tokens
from flash_vstream_hf.qwen2vl.modeling_flash_vstream_qwen2vl import patchify_frames

from .test_qwen2vl_model import END, START, VIDEO, tiny_config
from .test_qwen2vl_streaming import K, S, frames, random_features, streamed, tiny_processor

BAD_VALUES = [float("nan"), float("inf"), -float("inf")]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FlashVStreamQwen2VLForConditionalGeneration(tiny_config()).eval()


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.mark.parametrize("mode", ["bounded", "faithful"])
@pytest.mark.parametrize("resolution", ["full", "low"])
@pytest.mark.parametrize("bad", BAD_VALUES)
def test_a_non_finite_frame_is_refused_and_leaves_the_memory_unchanged(model, mode, resolution, bad):
    memory = streamed(model, random_features(5, seed=1), mode)
    before = memory.state
    features = random_features(4, seed=2)
    getattr(features, resolution)[0, 2, 1, 3] = bad
    with pytest.raises(ValueError, match=r"frame 2 .*not finite.*memory was not changed"):
        model.update_memory_from_features(features, memory)
    assert memory.state is before and memory.frames_seen == 5
    # the stream goes on with good frames: its read-out stays finite
    model.update_memory_from_features(random_features(8, seed=3), memory)
    read_out = model.model.read_memory(memory)
    assert memory.frames_seen == 13 and all(torch.isfinite(tokens).all() for tokens in read_out.pooler_output)


def test_non_finite_pixels_are_refused_before_the_memory(model, processor):
    pixels = processor.preprocess_frames(frames(3, seed=4), return_tensors="pt")[None]
    pixels[0, 1, 0, 5, 5] = float("nan")
    memory = model.new_memory()
    with pytest.raises(ValueError, match=r"frame 1 .*not finite"):
        model.update_memory(pixels, memory)
    assert memory.frames_seen == 0


def test_a_video_with_non_finite_pixels_is_refused_by_forward(model, processor):
    pixels = processor.preprocess_frames(frames(4, seed=5), return_tensors="pt").repeat_interleave(2, dim=0)
    rows = patchify_frames(pixels)
    rows[rows.shape[0] // 2, 7] = float("inf")  # a patch of the third temporal patch
    grid = (4, 4, 4)
    ids = torch.tensor([[START, *[VIDEO] * num_memory_tokens(grid, K, S, pool=2), END, 10, 11]])
    with pytest.raises(ValueError, match=r"temporal patch 2 \(frames 4 and 5\) of video 0 .*not finite"):
        model(input_ids=ids, pixel_values_videos=rows, video_grid_thw=torch.tensor([grid]))
