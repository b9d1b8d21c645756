"""fp16 / bf16 loading and the numerics of the STAR memory in half precision.

The memory stores its tensors in the model dtype but computes pooling means, k-means distances and the abstract
update in float32. So a half-precision memory may differ from the fp32 one only by rounding each stored value to
the storage dtype: at most one unit `eps(dtype) * max|x|` per tensor (fp16 eps 2^-10, bf16 eps 2^-7; measured
0.3-0.6 eps), and the k-means cluster sizes, which follow from the assignments, must be exactly equal.
"""

from __future__ import annotations

import pytest
import torch

from flash_vstream_hf import FlashVStreamForConditionalGeneration
from flash_vstream_hf.tiny import tiny_config, tiny_model, tiny_processor

HALF = [torch.float16, torch.bfloat16]

# The released memory layout (16x16 patch grid pooled to 8x8 / 4x4 / 1x1, 1024-dim features): a temporal point
# has 4 * 4 * 1024 = 16,384 dims, as in Flash-VStream-7b. One vision layer keeps the model small.
REAL_LAYOUT = {
    "vision_config": {"hidden_size": 1024, "intermediate_size": 128, "num_hidden_layers": 1,
                      "num_attention_heads": 4, "image_size": 64, "patch_size": 4},
    "spatial_pool_size": 8, "temporal_pool_size": 4, "abstract_pool_size": 1,
}  # fmt: skip


def large_norm_features(num_frames: int) -> torch.Tensor:
    """`[1, T, 256, 1024]` features with a per-frame component, scaled like large CLIP activations: a pooled
    temporal point has a squared norm around 2.7e5, over fp16's largest value (65504)."""
    generator = torch.Generator().manual_seed(0)
    per_frame = torch.randn(1, num_frames, 1, 1024, generator=generator)
    return 4 * (per_frame + 0.5 * torch.randn(1, num_frames, 256, 1024, generator=generator))


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_loading_and_generation(checkpoint, frames, dtype):
    model = FlashVStreamForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    memory = model.update_memory(frames(8))
    assert memory.dtype == dtype and memory.state.temporal_sizes.dtype == torch.float32
    inputs = tiny_processor(model.config)(
        text="USER: <video>\nWhat moves? ASSISTANT:", num_video_tokens=memory.get_seq_length(), return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs, video_memory=memory).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    tokens = model.generate(**inputs, video_memory=memory, max_new_tokens=4, do_sample=False)
    assert tokens.shape[1] == inputs["input_ids"].shape[1] + 4


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_memory_matches_fp32_without_overflow(dtype):
    config = tiny_config(**REAL_LAYOUT)
    features = large_norm_features(14)  # window overflow, k-means, one abstract chunk, one pending frame
    points = features[0, :2].reshape(2, 4, 4, 4, 4, 1024).mean((2, 4)).flatten(1)  # two pooled temporal points
    assert points.shape[-1] == 16_384
    assert torch.isinf(points.half().pow(2).sum(-1)).all()  # squared norms in naive fp16 overflow

    reference = tiny_model(config)
    half = tiny_model(config).to(dtype)
    expected = reference.update_memory_from_features(features)
    memory = half.update_memory_from_features(features.to(dtype))
    assert memory.dtype == dtype

    torch.testing.assert_close(memory.state.temporal_sizes, expected.state.temporal_sizes, rtol=0, atol=0)
    eps = torch.finfo(dtype).eps
    for name, tensor in expected.state.tensors().items():
        if name in ("generator_state", "temporal_sizes"):
            continue
        actual = memory.state.tensors()[name].float()
        assert torch.isfinite(actual).all(), name
        torch.testing.assert_close(actual, tensor, rtol=0, atol=eps * float(tensor.abs().max()), msg=name)
    with torch.no_grad():
        read_out = half.model.read_memory(memory).float()
        expected_read_out = reference.model.read_memory(expected)
    torch.testing.assert_close(read_out, expected_read_out, rtol=0, atol=eps * float(expected_read_out.abs().max()))
