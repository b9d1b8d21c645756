"""bitsandbytes 4-bit and 8-bit loading of the tiny model on CPU (layer sizes are multiples of 64, see tiny/model.py).

Tolerances for quantized vs fp32 logits, as relative Frobenius error ||l_q - l|| / ||l||: NF4 stores each weight
with about 8% relative RMS error and int8 with about 1% (docs/transformers_notes.md, "bitsandbytes on CPU");
through the tiny model's two quantized decoder layers that gave 0.13-0.17 (NF4) and 0.012-0.016 (int8) for model
seeds 0-3. The bounds below are 1.5-3x the worst of those and an order of magnitude under an unrelated model's
error (1.40-1.45), so a broken quantization (wrong module, wrong scale) fails them.
"""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from torch import nn
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

from flash_vstream_hf import FlashVStreamForConditionalGeneration, FlashVStreamModel
from flash_vstream_hf.tiny import tiny_processor

from .helpers import assert_same_memory

NF4_TOLERANCE = 0.25
INT8_TOLERANCE = 0.05
NOT_QUANTIZED = ("model.vision_tower", "model.multi_modal_projector", "model.abstract_memory_attention", "lm_head")

NF4 = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}


@pytest.fixture(scope="module")
def features():
    """12 frames of vision features: the window overflows, k-means runs, one abstract chunk is applied and three
    frames stay pending, so every memory path runs."""
    return torch.randn(1, 12, 64, 64, generator=torch.Generator().manual_seed(0))


def load(path, **quantization):
    config = BitsAndBytesConfig(**quantization) if quantization else None
    return FlashVStreamForConditionalGeneration.from_pretrained(path, quantization_config=config)


def linear_types(model: nn.Module) -> dict[str, type]:
    return {name: type(module) for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def quantized_names(model: nn.Module, quantized_type: type) -> set[str]:
    return {name for name, kind in linear_types(model).items() if issubclass(kind, quantized_type)}


def language_model_linears(model: nn.Module) -> set[str]:
    return {name for name in linear_types(model) if name.startswith("model.language_model.")}


def answer_logits(model, features) -> torch.Tensor:
    memory = model.update_memory_from_features(features)
    inputs = tiny_processor()(text="USER: <video>\nWhat moves? ASSISTANT:", num_video_tokens=memory.get_seq_length(),
                              return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        return model(**inputs, video_memory=memory).logits


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


@pytest.mark.parametrize(
    ("quantization", "quantized_type"),
    [(NF4, bnb.nn.Linear4bit), ({"load_in_8bit": True}, bnb.nn.Linear8bitLt)],
    ids=["4bit", "8bit"],
)
def test_default_quantizes_exactly_the_language_model_linears(checkpoint, quantization, quantized_type):
    model = load(checkpoint, **quantization)
    assert quantized_names(model, quantized_type) == language_model_linears(model)
    kept = {name for name in linear_types(model) if name.startswith(NOT_QUANTIZED)}
    assert kept and all(linear_types(model)[name] is nn.Linear for name in kept)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n.startswith(NOT_QUANTIZED))
    # the skip list the model chose is recorded, so a saved checkpoint reloads with the same layout
    assert sorted(model.config.quantization_config.llm_int8_skip_modules) == sorted(NOT_QUANTIZED)


def test_base_model_defaults_use_its_own_module_names(checkpoint):
    model = FlashVStreamModel.from_pretrained(checkpoint, quantization_config=BitsAndBytesConfig(**NF4))
    quantized = quantized_names(model, bnb.nn.Linear4bit)
    assert quantized and all(name.startswith("language_model.") for name in quantized)
    assert type(model.vision_tower.encoder.layers[0].mlp.fc1) is nn.Linear


def test_auto_class_and_dict_config_get_the_defaults_too(checkpoint):
    model = AutoModelForImageTextToText.from_pretrained(
        checkpoint, quantization_config={"quant_method": "bitsandbytes", **NF4}
    )
    assert isinstance(model, FlashVStreamForConditionalGeneration)
    assert quantized_names(model, bnb.nn.Linear4bit) == language_model_linears(model)


def test_user_skip_list_replaces_the_defaults(checkpoint, frames):
    # Only lm_head listed: the user asked for everything else, vision tower included, to be quantized.
    model = load(checkpoint, **NF4, llm_int8_skip_modules=["lm_head"])
    quantized = quantized_names(model, bnb.nn.Linear4bit)
    assert "model.vision_tower.encoder.layers.0.mlp.fc1" in quantized
    assert "model.multi_modal_projector.linear_1" in quantized
    assert "model.abstract_memory_attention.q_proj" in quantized
    assert type(model.lm_head) is nn.Linear
    memory = model.update_memory(frames(12))
    assert memory.dtype == torch.float32
    assert torch.isfinite(model.get_video_features(video_memory=memory).pooler_output).all()
    # The documented way to add to the defaults: extend the class's list.
    extra = "model.language_model.layers.0"
    skip = [*FlashVStreamForConditionalGeneration.quantization_skip_modules, extra]
    model = load(checkpoint, **NF4, llm_int8_skip_modules=skip)
    expected = {name for name in language_model_linears(model) if not name.startswith(extra + ".")}
    assert quantized_names(model, bnb.nn.Linear4bit) == expected


def test_caller_config_is_not_modified(checkpoint):
    config = BitsAndBytesConfig(**NF4)
    model = FlashVStreamForConditionalGeneration.from_pretrained(checkpoint, quantization_config=config)
    assert config.llm_int8_skip_modules is None
    assert model.config.quantization_config.llm_int8_skip_modules is not None


@pytest.mark.parametrize(("quantization", "tolerance"), [(NF4, NF4_TOLERANCE), ({"load_in_8bit": True}, INT8_TOLERANCE)],
                         ids=["4bit", "8bit"])  # fmt: skip
def test_quantized_memory_is_exact_and_logits_are_close(checkpoint, features, quantization, tolerance):
    reference, quantized = load(checkpoint), load(checkpoint, **quantization)
    # vision tower, memory attention and projector are not quantized: the video tokens are bit-identical
    ref_memory = reference.update_memory_from_features(features)
    q_memory = quantized.update_memory_from_features(features)
    assert q_memory.dtype == torch.float32
    assert_same_memory(q_memory, ref_memory)
    torch.testing.assert_close(
        quantized.get_video_features(video_memory=q_memory).pooler_output,
        reference.get_video_features(video_memory=ref_memory).pooler_output,
        rtol=0,
        atol=0,
    )
    error = relative_error(answer_logits(quantized, features), answer_logits(reference, features))
    assert 0 < error < tolerance


def test_generate_with_memory_in_4bit(checkpoint, frames):
    model = load(checkpoint, **NF4, bnb_4bit_compute_dtype=torch.bfloat16)
    processor = tiny_processor(model.config)
    pixels = frames(6, seed=1)
    memory = model.update_memory(pixels[:, :3])
    memory = model.update_memory(pixels[:, 3:], memory)
    inputs = processor(text="USER: <video>\nWhat moves? ASSISTANT:", num_video_tokens=memory.get_seq_length(),
                       return_tensors="pt")  # fmt: skip
    streamed = model.generate(**inputs, video_memory=memory, max_new_tokens=5, do_sample=False)
    assert streamed.shape == (1, inputs["input_ids"].shape[1] + 5)
    assert memory.frames_seen == 6
    # the offline path (all frames at prefill) builds the same memory, so it gives the same answer
    offline = model.generate(**inputs, pixel_values_videos=pixels, max_new_tokens=5, do_sample=False)
    assert torch.equal(offline, streamed)


@pytest.mark.parametrize(
    "quantization",
    [NF4, {**NF4, "bnb_4bit_use_double_quant": True}, {"load_in_8bit": True}],
    ids=["nf4", "nf4-double-quant", "8bit"],
)
def test_quantized_checkpoint_saves_and_reloads_identically(checkpoint, features, tmp_path, quantization):
    model = load(checkpoint, **quantization)
    # Saved before any forward pass: the safe path on every CPU (README: the save-after-forward trap).
    model.save_pretrained(tmp_path)
    expected = answer_logits(model, features)
    reloaded = FlashVStreamForConditionalGeneration.from_pretrained(tmp_path)  # no quantization_config needed
    assert reloaded.is_quantized
    assert linear_types(reloaded) == linear_types(model)
    torch.testing.assert_close(answer_logits(reloaded, features), expected, rtol=0, atol=0)


def test_double_quant_checkpoint_saved_after_forward_reloads(checkpoint, features, tmp_path):
    """With double quantization the absmax is re-quantized on save, so saving after inference is safe even on
    CPUs with AVX512-BF16 (where bitsandbytes repacks 4-bit weights in place on the first forward pass). There
    the reload differs only by bf16 rounding of absmax (about 0.004: docs/transformers_notes.md,
    "bitsandbytes on CPU"); 1e-2 bounds it."""
    model = load(checkpoint, **NF4, bnb_4bit_use_double_quant=True)
    expected = answer_logits(model, features)
    model.save_pretrained(tmp_path)
    reloaded = FlashVStreamForConditionalGeneration.from_pretrained(tmp_path)
    torch.testing.assert_close(answer_logits(reloaded, features), expected, rtol=0, atol=1e-2)
