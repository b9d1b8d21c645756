"""transformers' own model and generation checks (ModelTesterMixin, GenerationTesterMixin, ConfigTester) for the
Flash-VStream v2 model, through a ModelTester as transformers' test-suite builds one per model.

transformers' test mixins are not installable (they live in its repository's `tests/`), so the checks they make
that apply to a video-only model are written out here against `Qwen2VLFlashVStreamModelTester`'s tiny config and
inputs; those that do not apply are listed in `NOT_APPLICABLE` with the reason.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    DynamicCache,
    Trainer,
    TrainingArguments,
)

from flash_vstream_hf import (
    FlashVStreamQwen2VLConfig,
    FlashVStreamQwen2VLForConditionalGeneration,
    FlashVStreamQwen2VLModel,
)
from flash_vstream_hf.modeling import transformers_compat as compat
from flash_vstream_hf.qwen2vl.flash_memory import num_memory_tokens

from .test_qwen2vl_model import END, START, VIDEO, K, S, tiny_config

# Common tests of transformers' mixins that do not apply to this model, with the reason.
NOT_APPLICABLE = {
    "test_pruning / test_head_masking": "removed from transformers 5 (and Qwen2-VL's tests turn them off)",
    "test_feed_forward_chunking": "Qwen2-VL does not support feed-forward chunking (skipped upstream too)",
    "test_inputs_embeds_matches_input_ids_with_generate (with a video)": "the video placeholders are found in "
    "input_ids (as for Qwen2-VL upstream); text-only generation from inputs_embeds is tested below",
    "test_mismatching_num_image_tokens / image tests": "Flash-VStream v2 reads videos only; images are refused "
    "(a video placeholder count that does not match the memory is tested below)",
    "test_cpu_offload / test_disk_offload_*": "covered by tests/test_qwen2vl_device_map.py (CPU + disk offload)",
    "test_model_parallelism / test_multi_gpu_data_parallel_forward / tensor parallel": "need several GPUs",
    "test_flash_attn_* / test_sdpa_can_dispatch_on_flash": "need a GPU and flash-attn",
    "test_sdpa_can_compile_dynamic / torch.compile": "not supported by Qwen2-VL upstream (skipped there); the "
    "Flash Memory's k-means has data-dependent loops",
    "test_model_is_small": "upstream skips it for Qwen2-VL (the vision tower cannot be made smaller)",
    "pipeline tests": "transformers has no video-text-to-text pipeline; any-to-any needs torchvision",
    "test_torch_fx / test_torchscript_*": "removed from transformers 5",
    "test_contrastive_* / test_dola_* / test_group_beam_*": "moved out of transformers 5 to Hub custom_generate",
}


class Qwen2VLFlashVStreamModelTester:
    """Tiny config and inputs: `batch_size` prompts of `[text, <vision_start>, placeholders, <vision_end>, text]`,
    one video of `temporal_patches` temporal patches (2 frames each) each: 3 <= K, so the memory needs no
    k-means draw and every call builds the same one."""

    batch_size = 2
    temporal_patches = 3
    grid = (4, 4)  # video (h, w) in 14-px patches (multiples of 4: the low-resolution copy halves them)
    before, after = (5, 6), (7, 8, 9)

    def get_config(self) -> FlashVStreamQwen2VLConfig:
        return tiny_config()

    def video_grid_thw(self) -> torch.Tensor:
        return torch.tensor([[self.temporal_patches, *self.grid]] * self.batch_size)

    def num_video_tokens(self) -> int:
        return num_memory_tokens((self.temporal_patches, *self.grid), K, S, 2)

    def prepare_config_and_inputs_for_common(self, seed: int = 0) -> tuple[FlashVStreamQwen2VLConfig, dict]:
        generator = torch.Generator().manual_seed(seed)
        rows = self.batch_size * self.temporal_patches * self.grid[0] * self.grid[1]
        pixels = torch.randn(rows, 3 * 2 * 14 * 14, generator=generator)
        ids = [*self.before, START, *[VIDEO] * self.num_video_tokens(), END, *self.after]
        input_ids = torch.tensor([ids] * self.batch_size)
        input_ids[:, -1] = torch.randint(10, 99, (self.batch_size,), generator=generator)  # rows differ
        return self.get_config(), {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values_videos": pixels,
            "video_grid_thw": self.video_grid_thw(),
        }


tester = Qwen2VLFlashVStreamModelTester()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FlashVStreamQwen2VLForConditionalGeneration(tester.get_config()).eval()


@pytest.fixture
def inputs():
    return tester.prepare_config_and_inputs_for_common()[1]


def logits(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


# -- ConfigTester ------------------------------------------------------------------------------------------------


def test_config_round_trips_through_dict_json_and_a_folder(tmp_path):
    config = tester.get_config()
    assert FlashVStreamQwen2VLConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    config.to_json_file(tmp_path / "config.json")
    assert FlashVStreamQwen2VLConfig.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved")
    loaded = AutoConfig.from_pretrained(tmp_path / "saved")
    assert isinstance(loaded, FlashVStreamQwen2VLConfig)
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert loaded.vision_config.flash_memory_config == config.vision_config.flash_memory_config
    assert loaded.get_text_config(decoder=True).hidden_size == 64


def test_config_common_properties_and_sub_configs():
    config = tester.get_config()
    for name in ("vision_config", "text_config"):
        assert name in config.sub_configs
    text = config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (64, 2, 120)
    assert config.video_token_id == VIDEO


# -- ModelTesterMixin ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [FlashVStreamQwen2VLModel, FlashVStreamQwen2VLForConditionalGeneration])
def test_save_load_gives_the_same_outputs_and_no_missing_or_unexpected_keys(tmp_path, inputs, model_class):
    torch.manual_seed(0)
    model = model_class(tester.get_config()).eval()
    with torch.no_grad():
        expected = model(**inputs)[0]
    model.save_pretrained(tmp_path)
    loaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs)[0], expected, rtol=0, atol=0)
    auto = AutoModel if model_class is FlashVStreamQwen2VLModel else AutoModelForImageTextToText
    assert type(auto.from_pretrained(tmp_path)) is model_class


def test_determinism_and_a_batch_equals_its_rows(model, inputs):
    batched = logits(model, **inputs)
    torch.testing.assert_close(logits(model, **inputs), batched, rtol=0, atol=0)
    rows = inputs["pixel_values_videos"].shape[0] // tester.batch_size
    for index in range(tester.batch_size):
        alone = logits(
            model,
            input_ids=inputs["input_ids"][index : index + 1],
            attention_mask=inputs["attention_mask"][index : index + 1],
            pixel_values_videos=inputs["pixel_values_videos"][index * rows : (index + 1) * rows],
            video_grid_thw=inputs["video_grid_thw"][index : index + 1],
        )
        torch.testing.assert_close(alone[0], batched[index], rtol=1e-5, atol=1e-5)


def test_tuple_outputs_equal_the_model_output(model, inputs):
    as_dict = model(**inputs, output_hidden_states=True)
    as_tuple = model(**inputs, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.logits, rtol=0, atol=0)
    assert len(as_dict.hidden_states) == tester.get_config().text_config.num_hidden_layers + 1
    assert as_dict.hidden_states[0].shape == (*inputs["input_ids"].shape, 64)


def test_attention_outputs_with_eager_and_sdpa_agrees_with_eager(inputs):
    torch.manual_seed(0)
    model = FlashVStreamQwen2VLForConditionalGeneration(tester.get_config()).eval()
    sdpa = logits(model, **inputs)
    model.set_attn_implementation("eager")
    out = model(**inputs, output_attentions=True)
    batch, length = inputs["input_ids"].shape
    assert len(out.attentions) == 2 and out.attentions[0].shape == (batch, 4, length, length)
    torch.testing.assert_close(out.logits, sdpa, rtol=1e-4, atol=1e-5)


def test_training_reaches_every_part_and_gradient_checkpointing_gives_the_same_gradients(inputs):
    torch.manual_seed(0)
    model = FlashVStreamQwen2VLForConditionalGeneration(tester.get_config()).train()
    labels = inputs["input_ids"].clone()
    labels[:, : -len(tester.after)] = -100
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    for part in ("model.visual.blocks.0.", "model.visual.merger.", "model.language_model.layers.0.", "lm_head"):
        assert any(name.startswith(part) and grad.abs().sum() > 0 for name, grad in grads.items()), part
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    torch.testing.assert_close(model(**inputs, labels=labels).loss, loss, rtol=1e-6, atol=1e-6)
    model(**inputs, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_resize_token_embeddings(inputs):
    torch.manual_seed(0)
    model = FlashVStreamQwen2VLForConditionalGeneration(tester.get_config()).eval()
    model.resize_token_embeddings(128)
    assert model.get_input_embeddings().weight.shape[0] == 128 == model.get_output_embeddings().weight.shape[0]
    assert model.config.get_text_config().vocab_size == 128
    assert logits(model, **inputs).shape[-1] == 128


def test_inputs_embeds_match_input_ids_for_text(model, inputs):
    model.generate(**inputs, **GREEDY)  # leaves the video prompt's rope_deltas (batch 2) on the model
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(logits(model, inputs_embeds=embeds), logits(model, input_ids=ids), rtol=1e-5, atol=1e-6)


def test_missing_weights_get_the_sub_models_own_init():
    config = tester.get_config()
    loaded = FlashVStreamQwen2VLForConditionalGeneration.from_pretrained(None, config=config, state_dict={})
    std = loaded.model.language_model.layers[0].self_attn.q_proj.weight.std().item()
    expected = config.text_config.initializer_range
    assert abs(std - expected) < 0.2 * expected, (std, expected)
    assert torch.equal(loaded.model.language_model.norm.weight, torch.ones(64))


def test_a_placeholder_count_that_does_not_match_the_memory_is_refused(model, inputs):
    ids = inputs["input_ids"]
    short = torch.cat([ids[:, :3], ids[:, 4:]], dim=1)  # one placeholder fewer
    with pytest.raises(ValueError, match="memory has"):
        model(
            input_ids=short, pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"]
        )


def test_trainer_evaluate_and_predict(tmp_path, model, inputs):
    rows = inputs["pixel_values_videos"].shape[0] // tester.batch_size
    samples = [
        {
            "input_ids": inputs["input_ids"][i],
            "labels": inputs["input_ids"][i],
            "pixel_values_videos": inputs["pixel_values_videos"][i * rows : (i + 1) * rows],
            "video_grid_thw": inputs["video_grid_thw"][i],
        }
        for i in range(tester.batch_size)
    ]

    def collate(batch):
        return {
            "input_ids": torch.stack([s["input_ids"] for s in batch]),
            "labels": torch.stack([s["labels"] for s in batch]),
            "pixel_values_videos": torch.cat([s["pixel_values_videos"] for s in batch]),
            "video_grid_thw": torch.stack([s["video_grid_thw"] for s in batch]),
        }

    arguments = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True, disable_tqdm=True
    )
    trainer = Trainer(model=model, args=arguments, eval_dataset=samples, data_collator=collate)
    assert np.isfinite(trainer.evaluate()["eval_loss"])
    predicted = trainer.predict(samples).predictions
    predicted = predicted[0] if isinstance(predicted, tuple) else predicted
    np.testing.assert_allclose(predicted, logits(model, **inputs).numpy(), rtol=1e-4, atol=1e-5)


# -- GenerationTesterMixin -----------------------------------------------------------------------------------------

GREEDY = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}


def test_greedy_with_and_without_the_kv_cache_and_with_a_static_cache_agree(model, inputs):
    cached = model.generate(**inputs, **GREEDY)
    assert cached.shape == (tester.batch_size, inputs["input_ids"].shape[1] + 4)
    assert torch.equal(model.generate(**inputs, **GREEDY, use_cache=False), cached)
    assert torch.equal(model.generate(**inputs, **GREEDY, cache_implementation="static"), cached)


def test_generate_dict_outputs_scores_logits_and_hidden_states(model, inputs):
    out = model.generate(
        **inputs, **GREEDY, return_dict_in_generate=True, output_scores=True, output_logits=True,
        output_hidden_states=True,
    )  # fmt: skip
    assert len(out.scores) == len(out.logits) == 4 and out.scores[0].shape == (tester.batch_size, 120)
    assert isinstance(compat.output_cache(out), DynamicCache)
    assert torch.equal(out.sequences[:, -4:], torch.stack([s.argmax(-1) for s in out.scores], dim=1))
    assert len(out.hidden_states) == 4 and len(out.hidden_states[0]) == 3


def test_left_padding_does_not_change_the_answer(model, inputs):
    one = {key: value[:1] if key != "pixel_values_videos" else value[: value.shape[0] // 2]
           for key, value in inputs.items()}  # fmt: skip
    one["video_grid_thw"] = inputs["video_grid_thw"][:1]
    padded = dict(one)
    padded["input_ids"] = torch.cat([torch.zeros(1, 3, dtype=torch.long), one["input_ids"]], dim=1)
    padded["attention_mask"] = torch.cat([torch.zeros(1, 3, dtype=torch.long), one["attention_mask"]], dim=1)
    torch.testing.assert_close(logits(model, **padded)[:, -1], logits(model, **one)[:, -1], rtol=1e-5, atol=1e-5)
    assert torch.equal(model.generate(**padded, **GREEDY)[:, 3:], model.generate(**one, **GREEDY))


def test_generation_continues_from_its_past_key_values(model, inputs):
    full = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    first = model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    assert torch.equal(first.sequences, full[:, :-2])
    resumed = dict(inputs, input_ids=first.sequences, attention_mask=torch.ones_like(first.sequences))
    resumed.pop("pixel_values_videos"), resumed.pop("video_grid_thw")
    # the cache holds the video already: the remaining steps need neither pixels nor the grid
    cache = compat.cache_kwargs(copy.deepcopy(compat.output_cache(first)))
    continued = model.generate(**resumed, **cache, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    assert torch.equal(continued, full)


def test_sampling_is_reproducible_and_beams_return_sequences(model, inputs):
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(model.generate(**inputs, max_new_tokens=4, do_sample=True, top_k=20))
    assert torch.equal(runs[0], runs[1])
    beams = model.generate(**inputs, max_new_tokens=3, num_beams=2, num_return_sequences=2, do_sample=False)
    assert beams.shape == (2 * tester.batch_size, inputs["input_ids"].shape[1] + 3)


@pytest.mark.legacy_api  # transformers' candidate generator passes generation_config with kwargs (5.24 warns)
def test_assisted_and_prompt_lookup_decoding_give_the_greedy_answer(model, inputs):
    one = {key: value[:1] for key, value in inputs.items() if key != "pixel_values_videos"}
    one["pixel_values_videos"] = inputs["pixel_values_videos"][: inputs["pixel_values_videos"].shape[0] // 2]
    greedy = model.generate(**one, **GREEDY)
    torch.manual_seed(1)
    assistant = FlashVStreamQwen2VLForConditionalGeneration(tester.get_config()).eval()
    assert torch.equal(model.generate(**one, **GREEDY, assistant_model=assistant), greedy)
    assert torch.equal(model.generate(**one, **GREEDY, prompt_lookup_num_tokens=2), greedy)


def test_text_only_generate_from_inputs_embeds_matches_input_ids(model):
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    from_ids = model.generate(input_ids=ids, **GREEDY)
    from_embeds = model.generate(inputs_embeds=model.get_input_embeddings()(ids), **GREEDY)
    assert torch.equal(from_embeds, from_ids[:, ids.shape[1] :])


def test_the_not_applicable_list_names_its_reasons():
    assert all(reason.strip() for reason in NOT_APPLICABLE.values())
