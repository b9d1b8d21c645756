"""Flash-VStream v2 processor (56-px resize, memory-sized placeholders) and Auto registration."""

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

import flash_vstream_hf
from flash_vstream_hf import (
    FlashVStreamConfig,
    FlashVStreamForConditionalGeneration,
    FlashVStreamQwen2VLConfig,
    FlashVStreamQwen2VLForConditionalGeneration,
    FlashVStreamQwen2VLProcessor,
)

from .test_qwen2vl_model import tiny_config

FLASH_MEMORY = {"flash_memory_temporal_length": 6, "flash_memory_spatial_length": 4}  # K = 3, S = 2


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<|video_pad|>": 1, "<|image_pad|>": 2, "<|vision_start|>": 3, "<|vision_end|>": 4}
    vocab.update({word: len(vocab) + i for i, word in enumerate(["what", "is", "moving", "here", "?"])})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<unk>")
    wrapped.add_special_tokens({"additional_special_tokens": list(vocab)[1:5]})
    return wrapped


@pytest.fixture(scope="module")
def processor():
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112 * 4)
    return FlashVStreamQwen2VLProcessor(image_processor, tokenizer(), flash_memory_config=FLASH_MEMORY)


def frames(count, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("count", "size", "grid"), [(8, (64, 120), [4, 4, 8]), (1, (60, 60), [1, 4, 4])])
def test_frames_are_resized_to_multiples_of_56_px(processor, count, size, grid):
    pixels, video_grid = processor.preprocess_video(frames(count, *size))
    assert video_grid.tolist() == grid  # 64x120 -> 56x112, 60x60 -> 56x56 (Qwen2-VL's 28-px grid: 56x112 / 56x56)
    assert pixels.shape == (grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14)


def test_stream_frames_of_any_shape_are_resized_to_the_first_frames_56_px_target(processor):
    """60x90 rounds to 56x84 on Qwen2-VL's 28-px grid and 130x75 to 140x84: the 56-px targets are 56x112 and
    112x56. Every frame of a call takes the first frame's size; each stream frame is the offline path's pixels."""
    wide, tall = frames(2, 60, 90, seed=1), frames(1, 130, 75, seed=2)
    pixels = processor.preprocess_frames([*wide, *tall])
    assert pixels.shape == (3, 3, 56, 112)
    offline, grid = processor.preprocess_video(wide)
    assert grid.tolist() == [1, 4, 8]
    rows = offline.reshape(1, 2, 4, 2, 2, 3, 2, 14, 14)  # t, h/2, w/2, 2, 2, C, T, 14, 14
    first = rows[..., 0, :, :].permute(0, 5, 1, 3, 6, 2, 4, 7).reshape(3, 56, 112)
    torch.testing.assert_close(pixels[0], first, rtol=0, atol=0)
    assert processor.preprocess_frames([tall[0]]).shape == (1, 3, 112, 56)


def test_a_one_frame_clip_is_tiled_to_two_frames(processor):
    pixels, _ = processor.preprocess_video(frames(1, 56, 56))
    rows = pixels.reshape(-1, 3, 2, 14, 14)
    torch.testing.assert_close(rows[:, :, 0], rows[:, :, 1], rtol=0, atol=0)


def test_each_video_placeholder_becomes_its_memory_tokens(processor):
    out = processor(text="what is <|vision_start|> <|video_pad|> <|vision_end|> moving ?", videos=frames(8, 64, 120))
    # grid (4, 4, 8): DAM 2 of 4x8 patches = 16 tokens; CSM 3 of 2x4 = 6 tokens
    assert (out["input_ids"] == processor.video_token_id).sum() == 16 + 6
    assert processor.num_memory_tokens(out["video_grid_thw"][0]) == 22
    assert set(out) >= {"input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw"}


def test_processor_output_runs_the_model(processor):
    config = tiny_config(video_token_id=processor.video_token_id, vision_start_token_id=3, vision_end_token_id=4)
    config.vision_config.flash_memory_config.update(FLASH_MEMORY)
    model = FlashVStreamQwen2VLForConditionalGeneration(config).eval()
    out = processor(text="<|vision_start|> <|video_pad|> <|vision_end|> what ?", videos=[frames(12, 56, 56)])
    generated = model.generate(**out, max_new_tokens=2, do_sample=False)
    assert generated.shape[1] == out["input_ids"].shape[1] + 2


def test_videos_and_placeholders_must_pair_up(processor):
    with pytest.raises(ValueError, match="more videos"):
        processor(text="what ?", videos=frames(2, 56, 56))
    with pytest.raises(ValueError, match="more video placeholders"):
        processor(text="<|video_pad|> <|video_pad|>", videos=frames(2, 56, 56))


def test_auto_classes_resolve_both_families(tmp_path):
    assert AutoConfig.for_model("flash_vstream_qwen2_vl").__class__ is FlashVStreamQwen2VLConfig
    assert AutoConfig.for_model("flash_vstream").__class__ is FlashVStreamConfig
    model = AutoModelForImageTextToText.from_config(tiny_config())
    assert type(model) is FlashVStreamQwen2VLForConditionalGeneration
    model.save_pretrained(tmp_path)
    assert type(AutoModelForImageTextToText.from_pretrained(tmp_path)) is FlashVStreamQwen2VLForConditionalGeneration
    assert "FlashVStreamQwen2VLProcessor" in flash_vstream_hf.__all__
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    assert PROCESSOR_MAPPING[FlashVStreamQwen2VLConfig] is FlashVStreamQwen2VLProcessor
    assert AutoModelForImageTextToText.from_config(FlashVStreamConfig.from_dict(_v1_tiny())).__class__ is (
        FlashVStreamForConditionalGeneration
    )


def test_processor_saves_and_loads_through_auto_processor(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is FlashVStreamQwen2VLProcessor
    assert loaded.flash_memory_config == processor.flash_memory_config
    pixels, grid = loaded.preprocess_video(frames(4, 64, 120))
    expected_pixels, expected_grid = processor.preprocess_video(frames(4, 64, 120))
    assert torch.equal(pixels, expected_pixels) and torch.equal(grid, expected_grid)


def _v1_tiny():
    from flash_vstream_hf.tiny import tiny_config as v1_tiny_config

    return v1_tiny_config().to_dict()
