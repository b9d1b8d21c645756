"""Parity with the original Flash-VStream-Qwen code (transformers 4.45), from the fixtures it produced.

The fixtures (tests/fixtures/qwen2vl/, made by scripts/qwen2vl_fixtures/make_fixtures.py running the original on
CPU, one thread, eager attention) hold a tiny random checkpoint saved by the original in its 4.45 layout, and per
case the inputs, the original's logits and its greedy tokens. The model loads that checkpoint as it is and, with
the same global seed right before the forward (the k-means initialisation is the only random draw), must give the
same logits (1e-4) and the same greedy tokens. FLASH_VSTREAM_QWEN2VL_FIXTURES points at another fixture folder.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flash_vstream_hf.qwen2vl.modeling_flash_vstream_qwen2vl import FlashVStreamQwen2VLForConditionalGeneration
from flash_vstream_hf.qwen2vl.rope_flash_vstream_qwen2vl import apply_memory_positions

FIXTURES = Path(os.environ.get("FLASH_VSTREAM_QWEN2VL_FIXTURES", Path(__file__).parent / "fixtures" / "qwen2vl"))


def meta() -> dict:
    return json.loads((FIXTURES / "meta.json").read_text())


CASES = sorted(meta()["cases"])


@pytest.fixture(scope="module")
def model():
    loaded = FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(
        FIXTURES / meta()["load"]["dir"], attn_implementation="eager", dtype=torch.float32
    )
    return loaded.eval()


def inputs(case: dict) -> dict:
    tensors = load_file(str(FIXTURES / case["file"]))
    names = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")
    return {name: tensors[name] for name in names if name in tensors}, tensors


@pytest.mark.parametrize("name", CASES)
def test_logits_match_the_original(model, name):
    case = meta()["cases"][name]
    given, expected = inputs(case)
    with torch.no_grad():
        torch.manual_seed(case["seed"])
        logits = model(**given).logits
    difference = (logits - expected["logits"]).abs().max().item()
    print(f"{name}: max |logit difference| = {difference:.3g}")
    assert difference <= 1e-4


@pytest.mark.parametrize("name", CASES)
def test_greedy_tokens_match_the_original(model, name):
    case = meta()["cases"][name]
    given, expected = inputs(case)
    with torch.no_grad():
        torch.manual_seed(case["seed"])
        generated = model.generate(**given, max_new_tokens=meta()["max_new_tokens"], do_sample=False)
    new_tokens = generated[:, given["input_ids"].shape[1] :]
    assert new_tokens.tolist() == expected["generated_tokens"].tolist()


@pytest.mark.parametrize("name", [name for name in CASES if name != "text_only"])
def test_memory_choices_and_positions_match_the_original(model, name):
    case = meta()["cases"][name]
    given, expected = inputs(case)
    torch.manual_seed(case["seed"])
    with torch.no_grad():
        video = model.model.get_video_features(given["pixel_values_videos"], given["video_grid_thw"])
    positions, deltas = model.model.get_rope_index(
        given["input_ids"], video_grid_thw=given["video_grid_thw"], attention_mask=given["attention_mask"]
    )
    assert torch.equal(positions, expected["position_ids_rope"])
    assert deltas.tolist() == expected["rope_deltas"].tolist()
    rewritten = apply_memory_positions(
        positions, given["input_ids"], model.config.video_token_id, video.memory_position_ids
    )
    assert torch.equal(rewritten, expected["position_ids"])
    torch.testing.assert_close(
        video.pooler_output[0], expected["video_embeds"].reshape(video.pooler_output[0].shape), rtol=0, atol=1e-5
    )



def fixture_processor():
    """The processor on the fixture checkpoint's preprocessor config (Qwen2-VL-7B-Instruct's values)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from flash_vstream_hf.qwen2vl import FlashVStreamQwen2VLProcessor

    from .test_qwen2vl_processing import tokenizer

    image_processor = Qwen2VLImageProcessorPil.from_pretrained(FIXTURES / meta()["load"]["dir"])
    return FlashVStreamQwen2VLProcessor(image_processor, tokenizer())


def assert_processes_as_the_original(frames: torch.Tensor, pixel_values_videos, video_grid_thw) -> None:
    output = fixture_processor()(text="<|vision_start|><|video_pad|><|vision_end|>", videos=frames.numpy(),
                                 return_tensors="pt")  # fmt: skip
    assert output["video_grid_thw"].tolist() == video_grid_thw.tolist()
    assert torch.equal(output["pixel_values_videos"], pixel_values_videos)


@pytest.mark.parametrize("name", [n for n in CASES if n != "text_only"])
def test_the_processor_turns_the_cases_frames_into_the_originals_pixels_and_grid(name):
    """From the same uint8 frames, the original's `pixel_values_videos` bit for bit (both resize with Pillow)."""
    _, expected = inputs(meta()["cases"][name])
    frames = load_file(str(FIXTURES / "frames.safetensors"))[name]
    assert_processes_as_the_original(frames, expected["pixel_values_videos"], expected["video_grid_thw"])


PROCESSOR_SIZES = load_file(str(FIXTURES / "processor_sizes.safetensors"))  # compare_processor.py --sizes fixture


@pytest.mark.parametrize("size", sorted({key.rpartition("/")[0] for key in PROCESSOR_SIZES}))
def test_frames_whose_28_px_rounding_differs_are_resized_as_the_original_resizes_them(size):
    """60x90 and 130x75 frames: Qwen2-VL's image processor alone would round them to other sizes than the
    original's 56-px grid (56x84 and 140x84), which the processor refused before it resized frames itself."""
    given = {name: PROCESSOR_SIZES[f"{size}/{name}"] for name in ("frames", "pixel_values_videos", "video_grid_thw")}
    assert_processes_as_the_original(given["frames"], given["pixel_values_videos"], given["video_grid_thw"])
