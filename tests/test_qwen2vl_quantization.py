"""bitsandbytes 4-bit (and 8-bit) loading of the tiny Flash-VStream v2 model on CPU: the language model quantized, the
vision tower and patch merger (whose features the Flash Memory clusters) left in the compute dtype.

The tiny language model's layers are 64 and 128 wide (bitsandbytes' CPU kernels need multiples of 64, see
docs/transformers_notes.md, "bitsandbytes on CPU"); the vision tower is not quantized, so its 32-wide layers are
fine. Tolerance for NF4 vs fp32 logits, as relative Frobenius error: 0.107 was measured on this tiny model (seed 0);
0.25 is v1's bound for the same two quantized decoder layers, and an order of magnitude under an unrelated model's.
"""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoModelForImageTextToText, BitsAndBytesConfig

from flash_vstream_hf import FlashVStreamQwen2VLForConditionalGeneration, FlashVStreamQwen2VLModel

from .test_qwen2vl_model import prompt, tiny_config, video

NF4 = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
NF4_TOLERANCE = 0.25
NOT_QUANTIZED = ("model.visual.", "lm_head")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2vl_tiny")
    torch.manual_seed(0)
    FlashVStreamQwen2VLForConditionalGeneration(tiny_config()).save_pretrained(path)
    return path


def load(path, **quantization):
    config = BitsAndBytesConfig(**quantization) if quantization else None
    return FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(path, quantization_config=config).eval()


def linear_types(model: nn.Module) -> dict[str, type]:
    return {name: type(module) for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def quantized_names(model: nn.Module, quantized_type: type = bnb.nn.Linear4bit) -> set[str]:
    return {name for name, kind in linear_types(model).items() if issubclass(kind, quantized_type)}


def language_model_linears(model: nn.Module, prefix: str = "model.language_model.") -> set[str]:
    return {name for name in linear_types(model) if name.startswith(prefix)}


def run(model, seed: int = 1):
    """`(video tokens, logits)` of a 6-frame video question, the k-means draw seeded."""
    pixels, grid = video(t=6)
    ids = prompt(grid)
    with torch.no_grad():
        tokens = model.model.get_video_features(
            pixels, grid, memory_generator=torch.Generator().manual_seed(seed)
        ).pooler_output[0]
        logits = model(
            input_ids=ids,
            pixel_values_videos=pixels,
            video_grid_thw=grid,
            memory_generator=torch.Generator().manual_seed(seed),
        ).logits
    return tokens, logits


@pytest.mark.parametrize(
    ("quantization", "quantized_type"),
    [(NF4, bnb.nn.Linear4bit), ({"load_in_8bit": True}, bnb.nn.Linear8bitLt)],
    ids=["4bit", "8bit"],
)
def test_default_quantizes_exactly_the_language_model_linears(checkpoint, quantization, quantized_type):
    model = load(checkpoint, **quantization)
    quantized = quantized_names(model, quantized_type)
    assert quantized == language_model_linears(model) and len(quantized) == 14  # 2 layers x (q, k, v, o, 3 mlp)
    kept = {name for name in linear_types(model) if name.startswith(NOT_QUANTIZED)}
    # the vision blocks' attention and mlp, the merger's mlp and the head: plain Linear, fp32
    assert {
        "model.visual.blocks.0.attn.qkv",
        "model.visual.merger.mlp.0",
        "model.visual.merger.mlp.2",
        "lm_head",
    } <= kept
    assert all(linear_types(model)[name] is nn.Linear for name in kept)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n.startswith(NOT_QUANTIZED))
    assert sorted(model.config.quantization_config.llm_int8_skip_modules) == ["lm_head", "model.visual"]


def test_transformers_alone_would_quantize_the_vision_tower(checkpoint):
    """Why the model fills the skip list: with transformers' default (only `lm_head` kept) the vision blocks and
    the merger become 4-bit, and the Flash Memory would cluster quantized features. (Layout only: the tiny vision
    tower's 32-wide layers are too narrow for bitsandbytes' CPU 4-bit kernel to run.)"""
    model = load(checkpoint, **NF4, llm_int8_skip_modules=["lm_head"])
    quantized = quantized_names(model)
    assert {"model.visual.blocks.0.attn.qkv", "model.visual.merger.mlp.0"} <= quantized
    assert type(model.lm_head) is nn.Linear


def test_base_model_and_auto_classes_use_their_own_module_names(checkpoint):
    base = FlashVStreamQwen2VLModel.from_pretrained(checkpoint, quantization_config=BitsAndBytesConfig(**NF4))
    assert quantized_names(base) == language_model_linears(base, "language_model.") != set()
    assert type(base.visual.merger.mlp[0]) is nn.Linear
    auto = AutoModel.from_pretrained(checkpoint, quantization_config={"quant_method": "bitsandbytes", **NF4})
    assert isinstance(auto, FlashVStreamQwen2VLModel) and quantized_names(auto) == quantized_names(base)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, quantization_config=BitsAndBytesConfig(**NF4))
    assert isinstance(model, FlashVStreamQwen2VLForConditionalGeneration)
    assert quantized_names(model) == language_model_linears(model)


def test_a_skip_list_given_replaces_the_defaults_and_the_callers_config_is_not_modified(checkpoint):
    config = BitsAndBytesConfig(**NF4)
    FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(checkpoint, quantization_config=config)
    assert config.llm_int8_skip_modules is None
    extra = "model.language_model.layers.0"
    skip = [*FlashVStreamQwen2VLForConditionalGeneration.quantization_skip_modules, extra]
    model = load(checkpoint, **NF4, llm_int8_skip_modules=skip)
    expected = {name for name in language_model_linears(model) if not name.startswith(extra + ".")}
    assert quantized_names(model) == expected and len(expected) == 7


def test_4bit_memory_is_exact_and_logits_are_close(checkpoint):
    reference, quantized = load(checkpoint), load(checkpoint, **NF4)
    ref_tokens, ref_logits = run(reference)
    tokens, logits = run(quantized)
    # vision tower and merger are not quantized: the memory's tokens are bit-identical
    torch.testing.assert_close(tokens, ref_tokens, rtol=0, atol=0)
    error = float((logits - ref_logits).norm() / ref_logits.norm())
    assert 0 < error < NF4_TOLERANCE


def test_generate_in_4bit_with_bf16_compute(checkpoint):
    model = load(checkpoint, **NF4, bnb_4bit_compute_dtype=torch.bfloat16)
    pixels, grid = video(t=6)
    ids = prompt(grid)
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        outputs.append(
            model.generate(
                input_ids=ids,
                pixel_values_videos=pixels,
                video_grid_thw=grid,
                max_new_tokens=4,
                min_new_tokens=4,
                do_sample=False,
            )
        )
    assert outputs[0].shape == (1, ids.shape[1] + 4)
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize(
    "quantization",
    [NF4, {**NF4, "bnb_4bit_use_double_quant": True}, {"load_in_8bit": True}],
    ids=["nf4", "nf4-double-quant", "8bit"],
)
def test_quantized_checkpoint_saves_and_reloads_identically(checkpoint, tmp_path, quantization):
    model = load(checkpoint, **quantization)
    model.save_pretrained(
        tmp_path
    )  # before any forward pass: the safe path on every CPU (docs/transformers_notes.md, "bitsandbytes on CPU")
    _, expected = run(model)
    reloaded = FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(tmp_path).eval()  # no config needed
    assert reloaded.is_quantized and linear_types(reloaded) == linear_types(model)
    torch.testing.assert_close(run(reloaded)[1], expected, rtol=0, atol=0)
