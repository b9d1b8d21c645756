"""Big-model loading with `device_map` / `max_memory` on CPU: what does not fit the CPU budget is offloaded to disk
and brought in by accelerate hooks, with its parameters on the meta device in between."""

from __future__ import annotations

import pytest
import torch
from accelerate import infer_auto_device_map, init_empty_weights

from flash_vstream_hf import FlashVStreamForConditionalGeneration
from flash_vstream_hf.modeling.device_flash_vstream import execution_device
from flash_vstream_hf.tiny import tiny_config, tiny_model, tiny_processor

from .helpers import assert_same_memory

KEEP_WHOLE = ("model.multi_modal_projector", "model.abstract_memory_attention")


def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def stream_and_answer(model, frames: torch.Tensor):
    """Feed `frames` two at a time, then answer; returns the memory, the first-step logits and 6 greedy tokens."""
    memory = None
    for chunk in frames.split(2, dim=1):
        memory = model.update_memory(chunk, memory)
    inputs = tiny_processor(model.config)(
        text="USER: <video>\nWhat moves? ASSISTANT:", num_video_tokens=memory.get_seq_length(), return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs, video_memory=memory).logits
    tokens = model.generate(**inputs, video_memory=memory, max_new_tokens=6, do_sample=False)
    return memory, logits, tokens


@pytest.mark.parametrize("cpu_fraction", [0.4, 0.0], ids=["cpu+disk", "all-disk"])
def test_offloaded_model_streams_and_generates_like_the_unsplit_model(checkpoint, frames, tmp_path, cpu_fraction):
    reference = FlashVStreamForConditionalGeneration.from_pretrained(checkpoint)
    budget = max(1, int(cpu_fraction * model_bytes(reference)))
    model = FlashVStreamForConditionalGeneration.from_pretrained(
        checkpoint, device_map="auto", max_memory={"cpu": budget}, offload_folder=tmp_path
    )
    placement = model.hf_device_map
    assert "disk" in placement.values() and ("cpu" in placement.values()) == (cpu_fraction > 0)
    assert not [name for name in placement if name.startswith(tuple(f"{m}." for m in KEEP_WHOLE))]
    offloaded = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    assert any(name.startswith("model.vision_tower.") for name in offloaded)
    assert any(name.startswith("model.abstract_memory_attention.") for name in offloaded)

    pixels = frames(12)
    memory, logits, tokens = stream_and_answer(model, pixels)
    ref_memory, ref_logits, ref_tokens = stream_and_answer(reference, pixels)
    assert memory.device.type == "cpu" and memory.frames_seen == 12
    assert_same_memory(memory, ref_memory)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
    assert torch.equal(tokens, ref_tokens)


def test_execution_device_sees_through_offload_hooks(checkpoint, tmp_path):
    model = FlashVStreamForConditionalGeneration.from_pretrained(
        checkpoint, device_map="auto", max_memory={"cpu": 1}, offload_folder=tmp_path
    )
    attention = model.model.abstract_memory_attention
    assert all(p.device.type == "meta" for p in attention.parameters())
    assert execution_device(attention) == torch.device("cpu")
    assert execution_device(model.model.vision_tower) == torch.device("cpu")
    # not dispatched: the parameters' own device
    assert execution_device(tiny_model().model.multi_modal_projector) == torch.device("cpu")


def test_no_split_modules_keep_the_projector_and_memory_attention_whole():
    """Sweep CPU budgets over the whole model: accelerate would cut the projector or the abstract-memory attention
    between two layers at some budgets; with the model's `_no_split_modules` it never does."""
    with init_empty_weights():
        model = FlashVStreamForConditionalGeneration(tiny_config())
    ours = set(model._no_split_modules)
    without_ours = ours - {"FlashVStreamAbstractMemoryAttention", "FlashVStreamMultiModalProjector"}
    assert without_ours != ours

    def cut_modules(budget: int, no_split: set[str]) -> set[str]:
        placement = infer_auto_device_map(model, max_memory={"cpu": budget, "disk": 1 << 40},
                                          no_split_module_classes=sorted(no_split))  # fmt: skip
        return {whole for whole in KEEP_WHOLE for name in placement if name.startswith(whole + ".")}

    step = 2048  # below the smallest first layer of either module (8 KiB), so no cutting budget is skipped
    cutting = {budget: cut_modules(budget, without_ours) for budget in range(0, model_bytes(model), step)}
    cutting = {budget: cut for budget, cut in cutting.items() if cut}
    assert set().union(*cutting.values()) == set(KEEP_WHOLE)  # the sweep does reach budgets that cut both
    assert all(not cut_modules(budget, ours) for budget in cutting)
