"""Big-model loading of Flash-VStream v2 with `device_map` on CPU: a `max_memory` budget (or an explicit map) that
puts part of the model on disk, brought in by accelerate hooks; outputs equal the unsplit model's."""

from __future__ import annotations

import pytest
import torch
from accelerate import infer_auto_device_map, init_empty_weights

from flash_vstream_hf import FlashVStreamQwen2VLForConditionalGeneration

from .test_qwen2vl_model import prompt, tiny_config, video

MERGER = "model.visual.merger"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2vl_tiny")
    torch.manual_seed(0)
    FlashVStreamQwen2VLForConditionalGeneration(tiny_config()).save_pretrained(path)
    return path


def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def answer(model):
    """First-step logits and 4 greedy tokens for a 6-frame video, the k-means draw seeded."""
    pixels, grid = video(t=6)
    ids = prompt(grid)
    inputs = {"input_ids": ids, "pixel_values_videos": pixels, "video_grid_thw": grid}
    with torch.no_grad():
        logits = model(**inputs, memory_generator=torch.Generator().manual_seed(1)).logits
    torch.manual_seed(2)
    tokens = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    return logits, tokens


@pytest.fixture(scope="module")
def expected(checkpoint):
    return answer(FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(checkpoint).eval())


# accelerate keeps room on the CPU for the largest layer (the vision patch embedding, 23% of the tiny model), so 0.6 of
# the model's bytes is the budget that splits it: the vision tower on the CPU, the merger and the LLM on disk.
@pytest.mark.parametrize("cpu_fraction", [0.6, 0.0], ids=["cpu+disk", "all-disk"])
def test_auto_map_with_a_memory_budget_answers_like_the_unsplit_model(checkpoint, expected, tmp_path, cpu_fraction):
    reference = FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(checkpoint)
    budget = max(1, int(cpu_fraction * model_bytes(reference)))
    model = FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(
        checkpoint, device_map="auto", max_memory={"cpu": budget}, offload_folder=tmp_path
    ).eval()
    placement = model.hf_device_map
    assert "disk" in placement.values() and ("cpu" in placement.values()) == (cpu_fraction > 0)
    assert not [name for name in placement if name.startswith(MERGER + ".")]  # the merger stays whole
    assert any(p.device.type == "meta" for p in model.parameters())  # really offloaded
    logits, tokens = answer(model)
    torch.testing.assert_close(logits, expected[0], rtol=0, atol=0)
    assert torch.equal(tokens, expected[1])


def test_a_dict_map_spreading_the_layers_answers_like_the_unsplit_model(checkpoint, expected, tmp_path):
    device_map = {
        "model.visual.patch_embed": "cpu",
        "model.visual.rotary_pos_emb": "cpu",
        "model.visual.blocks": "disk",
        MERGER: "cpu",
        "model.language_model.embed_tokens": "cpu",
        "model.language_model.layers.0": "disk",
        "model.language_model.layers.1": "cpu",
        "model.language_model.norm": "disk",
        "model.language_model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    model = FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(
        checkpoint, device_map=device_map, offload_folder=tmp_path
    ).eval()
    assert model.hf_device_map == device_map
    offloaded = {name.split(".weight")[0] for name, p in model.named_parameters() if p.device.type == "meta"}
    assert any(name.startswith("model.visual.blocks.0.") for name in offloaded)
    assert any(name.startswith("model.language_model.layers.0.") for name in offloaded)
    assert not any(name.startswith("model.language_model.layers.1.") for name in offloaded)
    logits, tokens = answer(model)
    torch.testing.assert_close(logits, expected[0], rtol=0, atol=0)
    assert torch.equal(tokens, expected[1])


def test_no_split_modules_keep_the_merger_whole():
    """Sweep CPU budgets over the whole model: without `PatchMerger` in `_no_split_modules` accelerate cuts the
    merger between its layers at some budgets; with the model's list it never does."""
    with init_empty_weights():
        model = FlashVStreamQwen2VLForConditionalGeneration(tiny_config())
    ours = set(model._no_split_modules)
    assert "PatchMerger" in ours

    def merger_cut(budget: int, no_split: set[str]) -> bool:
        placement = infer_auto_device_map(
            model, max_memory={"cpu": budget, "disk": 1 << 40}, no_split_module_classes=sorted(no_split)
        )
        return any(name.startswith(MERGER + ".") for name in placement)

    budgets = range(0, model_bytes(model), 1024)
    cutting = [budget for budget in budgets if merger_cut(budget, ours - {"PatchMerger"})]
    assert cutting  # the sweep does reach budgets that cut it
    assert not any(merger_cut(budget, ours) for budget in cutting)
