"""The model: placeholders filled from the memory, loss and gradients, generate() in every mode, Hub format."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from flash_vstream_hf import FlashVStreamConfig, FlashVStreamForConditionalGeneration, FlashVStreamModel
from flash_vstream_hf.tiny import tiny_config, tiny_model

from .helpers import assert_same_memory
from .helpers import prompt_inputs as prompt_ids


def test_forward_fills_placeholders_from_the_memory(model, processor, frames):
    memory = model.update_memory(frames(9))
    inputs = prompt_ids(processor, memory.get_seq_length())
    out = model(**inputs, video_memory=memory)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert out.video_memory is memory
    assert out.video_hidden_states.shape == (1, memory.get_seq_length(), model.config.text_config.hidden_size)
    # the placeholder positions hold the projected memory, in read-out order
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    mask = inputs["input_ids"] == model.config.video_token_id
    embeds[mask] = model.get_video_features(video_memory=memory).pooler_output[0]
    manual = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(manual.logits, out.logits)


def test_inputs_embeds_with_placeholder_embeddings_match_input_ids(model, processor, frames):
    memory = model.update_memory(frames(4))
    inputs = prompt_ids(processor, memory.get_seq_length())
    from_ids = model(**inputs, video_memory=memory).logits
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    from_embeds = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], video_memory=memory).logits
    torch.testing.assert_close(from_embeds, from_ids)


def test_placeholder_count_must_match_the_memory(model, processor, frames):
    memory = model.update_memory(frames(3))
    wrong = prompt_ids(processor, memory.get_seq_length() - 1)
    with pytest.raises(ValueError, match=f"gives {memory.get_seq_length()} tokens"):
        model(**wrong, video_memory=memory)
    with pytest.raises(ValueError, match="neither video_memory nor pixel_values_videos"):
        model(**prompt_ids(processor, 4))


def test_text_only_prompt_needs_no_memory(model, processor):
    inputs = processor(text="Hello there", return_tensors="pt")
    assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


@pytest.mark.parametrize(
    "shape, message",
    [((1, 2, 3, 16, 16), r"\[3, 32, 32\]"), ((1, 0, 3, 32, 32), "at least one frame"), ((2, 3, 32, 32), "batch, frames")],
)
def test_bad_frames_are_rejected(model, shape, message):
    with pytest.raises(ValueError, match=message):
        model.update_memory(torch.zeros(shape))


def test_loss_and_gradients_reach_projector_and_abstract_attention(processor, frames):
    model = tiny_model().train()
    pixels = frames(8)  # 7 past frames: the abstract memory is updated by attention (4 fill + 3 pending)
    inputs = prompt_ids(processor, processor.num_video_tokens(8))
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.video_token_id, -100)
    out = model(**inputs, pixel_values_videos=pixels, labels=labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    inner = model.model
    for name, module in [("projector", inner.multi_modal_projector), ("attention", inner.abstract_memory_attention)]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_pixels_and_memory_give_identical_answers_in_every_decoding_mode(model, processor, frames):
    pixels = frames(12)  # k-means runs: both paths must build the memory once, with the same seed
    memory = model.update_memory(pixels)
    inputs = prompt_ids(processor, memory.get_seq_length())
    modes = [
        {"do_sample": False},
        {"do_sample": True, "top_k": 20},
        {"num_beams": 3, "do_sample": False},
        {"num_beams": 3, "num_return_sequences": 2, "do_sample": False},
        {"do_sample": True, "num_return_sequences": 3},
    ]
    for mode in modes:
        torch.manual_seed(0)
        from_memory = model.generate(**inputs, video_memory=memory, max_new_tokens=6, **mode)
        torch.manual_seed(0)
        from_pixels = model.generate(**inputs, pixel_values_videos=pixels, max_new_tokens=6, **mode)
        assert torch.equal(from_memory, from_pixels), mode
        assert from_memory.shape[0] == mode.get("num_return_sequences", 1)


def test_asking_twice_gives_the_same_answer_and_leaves_the_memory_alone(model, processor, frames):
    memory = model.update_memory(frames(10))
    frames_seen, before = memory.frames_seen, {n: t.clone() for n, t in memory.state.tensors().items()}
    inputs = prompt_ids(processor, memory.get_seq_length())
    first = model.generate(**inputs, video_memory=memory, max_new_tokens=8, do_sample=False)
    second = model.generate(**inputs, video_memory=memory, max_new_tokens=8, do_sample=False)
    assert torch.equal(first, second)
    assert memory.frames_seen == frames_seen
    for name, tensor in memory.state.tensors().items():
        assert torch.equal(tensor, before[name]), name


def test_the_video_token_is_never_generated(processor, frames):
    model = tiny_model()
    with torch.no_grad():  # make <video> the most likely token everywhere
        model.lm_head.weight[model.config.video_token_id] = 100 * model.lm_head.weight.abs().max()
    memory = model.update_memory(frames(2))
    out = model.generate(**prompt_ids(processor, memory.get_seq_length()), video_memory=memory, max_new_tokens=5)
    assert model.config.video_token_id not in out[0, -5:].tolist()


def test_each_prompt_of_a_batch_reads_its_own_stream(model, processor, frames):
    pixels = frames(4, batch=2)  # 3 past frames: no k-means, so each stream alone is deterministic
    memory = model.update_memory(pixels)
    prompt = prompt_ids(processor, memory.get_seq_length())
    batch = {k: v.repeat(2, 1) for k, v in prompt.items()}
    together = model.generate(**batch, video_memory=memory, max_new_tokens=6, do_sample=False)
    for b in range(2):
        alone = model.generate(**prompt, pixel_values_videos=pixels[b : b + 1], max_new_tokens=6, do_sample=False)
        assert torch.equal(together[b : b + 1], alone)


def test_save_and_load_round_trip_with_auto_classes(model, processor, frames, tmp_path):
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), FlashVStreamConfig)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, FlashVStreamForConditionalGeneration)
    assert type(loaded_processor) is type(processor)
    pixels = frames(8)
    inputs = prompt_ids(loaded_processor, loaded_processor.num_video_tokens(8))
    torch.testing.assert_close(
        loaded(**inputs, pixel_values_videos=pixels).logits, model(**inputs, pixel_values_videos=pixels).logits,
        rtol=0, atol=0,
    )
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, FlashVStreamModel)


def test_auto_classes_build_from_config():
    config = tiny_config()
    assert isinstance(AutoModel.from_config(config), FlashVStreamModel)
    assert isinstance(AutoModelForImageTextToText.from_config(config), FlashVStreamForConditionalGeneration)
    assert isinstance(AutoConfig.for_model("flash_vstream"), FlashVStreamConfig)


def test_bfloat16_loading_keeps_the_memory_in_the_model_dtype(model, processor, frames, tmp_path):
    model.save_pretrained(tmp_path)
    half = FlashVStreamForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    memory = half.update_memory(frames(10))
    assert half.dtype == torch.bfloat16 and memory.dtype == torch.bfloat16
    assert memory.state.temporal_sizes.dtype == torch.float32
    inputs = prompt_ids(processor, memory.get_seq_length())
    out = half.generate(**inputs, video_memory=memory, max_new_tokens=3)
    assert out.shape[1] > inputs["input_ids"].shape[1]  # it generated


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_implementations_agree(model, processor, frames, tmp_path, implementation):
    model.save_pretrained(tmp_path)
    loaded = FlashVStreamForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=implementation)
    assert loaded.config.text_config._attn_implementation == implementation
    assert loaded.config.vision_config._attn_implementation == implementation
    inputs = prompt_ids(processor, processor.num_video_tokens(6))
    torch.testing.assert_close(
        loaded(**inputs, pixel_values_videos=frames(6)).logits,
        model(**inputs, pixel_values_videos=frames(6)).logits,
        rtol=1e-4, atol=1e-4,
    )


def test_config_rejects_invalid_star_fields():
    with pytest.raises(ValueError, match="spatial_pool_size"):
        tiny_config(spatial_pool_size=3)
    with pytest.raises(ValueError, match="abstract_pool_size"):
        tiny_config(abstract_pool_size=3)
    with pytest.raises(ValueError, match="temporal_length"):
        tiny_config(temporal_length=-1)
    with pytest.raises(ValueError, match="retrieval_mode"):
        tiny_config(retrieval_mode="nearest")
    config = tiny_config()
    config.spatial_length = -2  # checked again when a model is built from a config changed after creation
    with pytest.raises(ValueError, match="spatial_length"):
        FlashVStreamForConditionalGeneration(config)


def test_default_config_is_the_released_model():
    config = FlashVStreamConfig()
    assert (config.vision_config.hidden_size, config.vision_config.image_size, config.patch_grid_size) == (1024, 224, 16)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (4096, 32)
    assert config.retrieval_mode == "original" and config.vision_feature_layer == -2


def test_add_frame_features_is_update_memory_from_features_with_gradients(model, frames):
    features = model.get_frame_features(frames(3)).detach().requires_grad_(True)  # [1, 3, P_spa^2, D]
    trained = model.add_frame_features(features)
    assert_same_memory(trained, model.update_memory_from_features(features.detach()))
    model.read_memory(trained).sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_a_model_sharing_the_modules_of_another_trains_them():
    other = tiny_model()
    shared = FlashVStreamForConditionalGeneration.sharing_modules_of(other, tiny_config(temporal_length=4))
    assert shared.star_layout.temporal_length == 4 and shared.get_input_embeddings() is other.get_input_embeddings()
    assert shared.get_multi_modal_projector() is other.get_multi_modal_projector() and shared.lm_head is other.lm_head
