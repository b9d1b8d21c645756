"""Flash-VStream v2 model on a tiny random config: positions, forward, generate, and the original checkpoint layout."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from flash_vstream_hf.qwen2vl.configuration_flash_vstream_qwen2vl import FlashVStreamQwen2VLConfig
from flash_vstream_hf.qwen2vl.flash_memory import num_memory_tokens
from flash_vstream_hf.qwen2vl.modeling_flash_vstream_qwen2vl import FlashVStreamQwen2VLForConditionalGeneration
from flash_vstream_hf.qwen2vl.rope_flash_vstream_qwen2vl import (
    apply_memory_positions,
    memory_relative_positions,
    placeholder_rope_index,
)
from flash_vstream_hf.tiny.qwen2vl import END, START, VIDEO, tiny_qwen2vl_config

K, S = 3, 2  # CSM clusters, DAM patches


def tiny_config(**overrides) -> FlashVStreamQwen2VLConfig:
    return tiny_qwen2vl_config(K, S, **overrides)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FlashVStreamQwen2VLForConditionalGeneration(tiny_config()).eval()


def video(t=4, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t * h * w, 3 * 2 * 14 * 14, generator=g), torch.tensor([[t, h, w]])


def prompt(grid, before=(5, 6), after=(7, 8, 9)):
    n = num_memory_tokens(tuple(grid[0].tolist()), K, S, 2)
    return torch.tensor([[*before, START, *[VIDEO] * n, END, *after]])


# -- positions ---------------------------------------------------------------------------------------------------


def test_placeholder_layout_resumes_text_after_the_csm_block():
    # One video, grid (4, 4, 4): DAM 2 patches of 2x2 tokens (8 tokens), CSM 3 entries of 1x1 token (3 tokens).
    ids = torch.tensor([[5, START] + [VIDEO] * 11 + [END, 7]])
    positions, deltas = placeholder_rope_index(ids, VIDEO, [((2, 4, 4), (3, 2, 2))])
    t, h, w = positions[:, 0].tolist()
    assert t[:2] == [0, 1] and h[:2] == [0, 1]
    # DAM starts at 2: t = 2 + frame, h/w = 2 + row/col
    assert t[2:10] == [2, 2, 2, 2, 3, 3, 3, 3] and h[2:10] == [2, 2, 3, 3, 2, 2, 3, 3]
    assert w[2:10] == [2, 3, 2, 3, 2, 3, 2, 3]
    # CSM offset by the 8 DAM tokens in all three axes
    assert t[10:13] == [10, 11, 12] and h[10:13] == [10, 10, 10]
    # text resumes at the CSM block's max + 1
    assert [t[13], t[14]] == [13, 14] and h[13:] == w[13:] == t[13:]
    assert deltas.tolist() == [[14 + 1 - 15]]


def test_am_rope_rewrites_only_the_memory_time_axis_and_text_can_sit_below_it():
    ids = torch.tensor([[5, START] + [VIDEO] * 11 + [END, 7]])
    positions, _ = placeholder_rope_index(ids, VIDEO, [((2, 4, 4), (3, 2, 2))])
    # DAM took temporal patches 9 and 3 (weight order), CSM entries sit at rounded times 1, 5, 9.
    relative = memory_relative_positions(torch.tensor([9, 3]), (2, 4, 4), torch.tensor([1, 5, 9]), (3, 2, 2))
    rewritten = apply_memory_positions(positions, ids, VIDEO, [relative])
    t, h, w = rewritten[:, 0].tolist()
    assert t[2:10] == [11] * 4 + [5] * 4
    assert t[10:13] == [2 + 8 + 1, 2 + 8 + 5, 2 + 8 + 9]
    assert h == positions[1, 0].tolist() and w == positions[2, 0].tolist()
    assert t[13:] == [13, 14]  # text after the video is below the last CSM entry (19): the trained layout
    assert torch.equal(positions[:, :, :2], rewritten[:, :, :2])


def test_apply_memory_positions_keeps_the_text_row_of_generate_positions():
    ids = torch.tensor([[START] + [VIDEO] * 11 + [END]])
    positions, _ = placeholder_rope_index(ids, VIDEO, [((2, 4, 4), (3, 2, 2))])
    four = torch.cat([torch.arange(13).view(1, 1, -1), positions])
    relative = memory_relative_positions(torch.tensor([1, 0]), (2, 4, 4), torch.tensor([0, 1, 2]), (3, 2, 2))
    rewritten = apply_memory_positions(four, ids, VIDEO, [relative])
    assert torch.equal(rewritten[0], four[0])
    assert torch.equal(rewritten[1:], apply_memory_positions(positions, ids, VIDEO, [relative]))


def test_a_placeholder_run_of_the_wrong_length_is_refused():
    ids = torch.tensor([[START] + [VIDEO] * 10 + [END]])
    with pytest.raises(ValueError, match="memory has 11 tokens"):
        placeholder_rope_index(ids, VIDEO, [((2, 4, 4), (3, 2, 2))])


def test_text_only_positions_follow_the_attention_mask():
    ids = torch.tensor([[0, 0, 5, 6], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    positions, deltas = placeholder_rope_index(ids, VIDEO, None, mask)
    assert positions[0].tolist() == [[1, 1, 0, 1], [0, 1, 2, 3]]
    assert deltas.tolist() == [[0], [0]]


# -- forward and generate --------------------------------------------------------------------------------------


def test_forward_fills_the_placeholders_with_the_memory(model):
    pixels, grid = video()
    ids = prompt(grid)
    torch.manual_seed(1)
    logits = model(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid).logits
    torch.manual_seed(1)
    other = model(input_ids=ids, pixel_values_videos=pixels + 1, video_grid_thw=grid).logits
    assert logits.shape == (1, ids.shape[1], 120)
    assert torch.equal(logits[:, :3], other[:, :3])  # before the video: causal, untouched
    assert not torch.allclose(logits[:, -1], other[:, -1])


def test_forward_works_out_the_positions_itself(model):
    pixels, grid = video()
    ids = prompt(grid)
    torch.manual_seed(1)
    implicit = model(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid).logits
    positions, _ = model.model.get_rope_index(ids, video_grid_thw=grid)
    torch.manual_seed(1)
    explicit = model(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid, position_ids=positions).logits
    torch.testing.assert_close(implicit, explicit, rtol=0, atol=0)


def test_same_seed_same_memory_and_the_seed_matters_once_clustering_runs(model):
    pixels, grid = video(t=6)
    ids = prompt(grid)
    runs = []
    for seed in (0, 0):
        torch.manual_seed(seed)
        runs.append(model(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid).logits)
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    generator = torch.Generator().manual_seed(0)
    seeded = model(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid, memory_generator=generator)
    assert seeded.logits.shape == runs[0].shape


def test_greedy_generate_matches_a_manual_argmax_loop(model):
    pixels, grid = video(t=6)
    ids = prompt(grid)
    torch.manual_seed(2)
    generated = model.generate(
        input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid, max_new_tokens=4, do_sample=False
    )
    sequence = ids
    for step in range(4):
        torch.manual_seed(2)  # the memory is rebuilt each time from the same draw
        logits = model(input_ids=sequence, pixel_values_videos=pixels, video_grid_thw=grid).logits
        sequence = torch.cat([sequence, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, sequence)


def test_beam_search_sampling_and_streamer_run(model):
    from transformers import TextStreamer

    pixels, grid = video(t=6)
    ids = prompt(grid)
    beams = model.generate(
        input_ids=ids,
        pixel_values_videos=pixels,
        video_grid_thw=grid,
        max_new_tokens=3,
        num_beams=3,
        num_return_sequences=2,
    )
    assert beams.shape == (2, ids.shape[1] + 3)
    samples = []
    for _ in range(2):
        torch.manual_seed(5)
        samples.append(
            model.generate(
                input_ids=ids,
                pixel_values_videos=pixels,
                video_grid_thw=grid,
                max_new_tokens=3,
                do_sample=True,
                num_return_sequences=2,
            )
        )
    assert torch.equal(samples[0], samples[1])

    class Tokens:
        def decode(self, ids, **kwargs):
            return " ".join(map(str, ids))

    streamed = []
    streamer = TextStreamer(Tokens())
    streamer.on_finalized_text = lambda text, stream_end=False: streamed.append(text)
    model.generate(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid, max_new_tokens=3, streamer=streamer)
    assert "".join(streamed).strip()


def test_beams_share_one_memory(model):
    pixels, grid = video(t=6)
    ids = prompt(grid)
    draws = []
    original = torch.randperm

    def counting_randperm(*args, **kwargs):
        draws.append(args)
        return original(*args, **kwargs)

    torch.randperm = counting_randperm
    try:
        model.generate(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid, max_new_tokens=2, num_beams=3)
    finally:
        torch.randperm = original
    assert len(draws) == 1


def test_images_are_refused(model):
    with pytest.raises(ValueError, match="videos only"):
        model(
            input_ids=torch.tensor([[5]]), pixel_values=torch.zeros(4, 1176), image_grid_thw=torch.tensor([[1, 2, 2]])
        )


# -- checkpoints: the original's 4.45 layout and ours -------------------------------------------------------------


def original_layout_checkpoint(model, path):
    """Write `model` as the original saves it (transformers 4.45): a flat config diff dict and 4.45 key names."""
    config = model.config
    text = config.text_config
    config_dict = {
        "architectures": ["FlashVStreamQwen2VLModel"],
        "model_type": "flash_vstream_qwen2_vl",
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "vocab_size": text.vocab_size,
        "rms_norm_eps": text.rms_norm_eps,
        "rope_theta": 1e4,
        "max_position_embeddings": 4096,
        "rope_scaling": {"type": "default", "rope_type": "default", "mrope_section": [2, 3, 3]},
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "transformers_version": "4.45.0",
        "video_token_id": VIDEO,
        "vision_start_token_id": START,
        "vision_end_token_id": END,
        "image_token_id": 103,
        "vision_config": {
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "model_type": "qwen2_vl",
            "flash_memory_config": dict(config.vision_config.flash_memory_config),
        },
    }
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config_dict))
    renamed = {}
    for key, tensor in model.state_dict().items():
        key = key.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        renamed[key] = tensor.clone()
    assert any(k.startswith("visual.") for k in renamed) and any(k.startswith("model.layers.") for k in renamed)
    save_file(renamed, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_the_original_layout_loads_without_conversion_and_saves_as_transformers_5(model, tmp_path):
    original_layout_checkpoint(model, tmp_path / "original")
    loaded = FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(tmp_path / "original").eval()
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], tensor, rtol=0, atol=0, msg=key)
    assert loaded.config.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    assert loaded.config.vision_config.num_csm_clusters == K

    pixels, grid = video(t=6)
    ids = prompt(grid)
    torch.manual_seed(3)
    expected = model(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid).logits

    loaded.save_pretrained(tmp_path / "ours")
    keys = load_file(str(tmp_path / "ours" / "model.safetensors")).keys()
    assert all(k.startswith(("model.language_model.", "model.visual.", "lm_head.")) for k in keys)
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["vision_config"]["flash_memory_config"]["flash_memory_temporal_length"] == 2 * K
    reloaded = FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    for candidate in (loaded, reloaded):
        torch.manual_seed(3)
        got = candidate(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid).logits
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
