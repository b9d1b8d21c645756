"""Flash-VStream v2 streaming: the stream memory (bounded and faithful modes), its file, and StreamingSession."""

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from flash_vstream_hf import StreamingSession
from flash_vstream_hf.qwen2vl import FlashVStreamQwen2VLForConditionalGeneration, FlashVStreamQwen2VLProcessor
from flash_vstream_hf.qwen2vl.memory_flash_vstream_qwen2vl import FlashVStreamQwen2VLMemory
from flash_vstream_hf.qwen2vl.modeling_flash_vstream_qwen2vl import (
    FlashVStreamQwen2VLFrameFeatures,
    patchify_frames,
)
from flash_vstream_hf.streaming import IteratorSource

from .test_qwen2vl_model import END, START, VIDEO, tiny_config

K, S = 3, 2
CHAT_TEMPLATE = (
    "{% for message in messages %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}<|vision_start|> <|video_pad|> <|vision_end|> "
    "{% else %}{{ item['text'] }} {% endif %}{% endfor %}{% endfor %}"
)


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["what", "is", "moving", "here", "?", "warm", "up"]
    vocab = {"<unk>": 0, "<|video_pad|>": VIDEO, "<|vision_start|>": START, "<|vision_end|>": END, "<|image_pad|>": 103}
    vocab.update({word: 10 + i for i, word in enumerate(words)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<unk>")
    wrapped.add_special_tokens({"additional_special_tokens": ["<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]})
    return wrapped


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FlashVStreamQwen2VLForConditionalGeneration(tiny_config()).eval()


def tiny_processor() -> FlashVStreamQwen2VLProcessor:
    """The tiny model's processor: 56x56 frames, the word-level tokenizer above."""
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    flash = {"flash_memory_temporal_length": 2 * K, "flash_memory_spatial_length": 2 * S}
    return FlashVStreamQwen2VLProcessor(
        image_processor, tokenizer(), chat_template=CHAT_TEMPLATE, flash_memory_config=flash
    )


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def frames(count, seed=0, side=56):
    return list(np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), dtype=np.uint8))


def random_features(count, seed=0, grid=(4, 4), dim=32):
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    full = torch.randn(1, count, h * w, dim, generator=g)
    return FlashVStreamQwen2VLFrameFeatures(full, torch.randn(1, count, h * w // 4, dim, generator=g), grid)


def streamed(model, features, mode, seed=0):
    memory = model.new_memory(seed=seed, streaming_mode=mode)
    return model.update_memory_from_features(features, memory)


def same_state(a: FlashVStreamQwen2VLMemory, b: FlashVStreamQwen2VLMemory) -> bool:
    ta, tb = a.state.tensors(), b.state.tensors()
    return a.frames_seen == b.frames_seen and ta.keys() == tb.keys() and all(torch.equal(ta[n], tb[n]) for n in ta)


# -- the memory object ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bounded", "faithful"])
def test_token_count_follows_the_offline_memory_of_as_many_temporal_patches(model, processor, mode):
    memory = model.new_memory(streaming_mode=mode)
    assert memory.get_seq_length() == 0 and memory.frames_seen == 0
    for count in range(1, 7):
        model.update_memory_from_features(random_features(1, seed=count), memory)
        assert memory.frames_seen == count
        assert memory.get_seq_length() == processor.num_memory_tokens((count, 4, 4))


def test_default_mode_is_bounded_and_the_config_field_chooses_it():
    assert FlashVStreamQwen2VLForConditionalGeneration(tiny_config()).new_memory().streaming_mode == "bounded"
    config = tiny_config()
    config.vision_config.flash_memory_config["flash_memory_streaming_mode"] = "faithful"
    assert FlashVStreamQwen2VLForConditionalGeneration(config).new_memory().streaming_mode == "faithful"


def test_bounded_memory_bytes_do_not_grow_with_the_stream_and_faithful_ones_do(model):
    sizes = {}
    for mode, frames in (("bounded", 1000), ("faithful", 200)):
        memory = model.new_memory(streaming_mode=mode)
        model.update_memory_from_features(random_features(10, seed=1), memory)
        at_10 = memory.nbytes
        model.update_memory_from_features(random_features(frames - 10, seed=2), memory)
        assert memory.frames_seen == frames
        sizes[mode] = (at_10, memory.nbytes)
    assert sizes["bounded"][0] == sizes["bounded"][1]  # 10 and 1,000 frames
    assert sizes["faithful"][1] > 15 * sizes["faithful"][0]  # it keeps every frame: linear growth, as the original


@pytest.mark.parametrize("mode", ["bounded", "faithful"])
def test_same_frames_and_seed_give_a_bit_identical_memory(model, mode):
    features = random_features(12, seed=3)
    assert same_state(streamed(model, features, mode, seed=5), streamed(model, features, mode, seed=5))
    assert not same_state(streamed(model, features, mode, seed=5), streamed(model, features, mode, seed=6))


def test_a_snapshot_does_not_change_when_frames_are_added(model):
    memory = streamed(model, random_features(5, seed=4), "bounded")
    snapshot = memory.snapshot()
    before = {name: t.clone() for name, t in snapshot.state.tensors().items()}
    model.update_memory_from_features(random_features(3, seed=5), memory)
    assert snapshot.frames_seen == 5 and memory.frames_seen == 8
    assert all(torch.equal(before[name], t) for name, t in snapshot.state.tensors().items())


def test_one_stream_per_memory_and_one_frame_size_per_stream(model):
    with pytest.raises(ValueError, match="batch_size must be 1"):
        model.new_memory(2)
    two = FlashVStreamQwen2VLFrameFeatures(torch.zeros(2, 1, 16, 32), torch.zeros(2, 1, 4, 32), (4, 4))
    with pytest.raises(ValueError, match="batch 1"):
        model.update_memory_from_features(two)
    memory = streamed(model, random_features(2), "bounded")
    with pytest.raises(ValueError, match="one patch grid"):
        model.update_memory_from_features(random_features(1, grid=(4, 8)), memory)
    with pytest.raises(ValueError, match="streaming_mode"):
        model.new_memory(streaming_mode="lossy")


# -- memory files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bounded", "faithful"])
def test_a_saved_and_loaded_memory_resumes_bit_identically(model, tmp_path, mode):
    first, rest = random_features(7, seed=6), random_features(6, seed=7)
    uninterrupted = streamed(model, first, mode, seed=3)
    model.update_memory_from_features(rest, uninterrupted)
    saved = streamed(model, first, mode, seed=3)
    saved.save(tmp_path / "memory.safetensors")
    resumed = FlashVStreamQwen2VLMemory.load(tmp_path / "memory.safetensors")
    assert resumed.layout == saved.layout and same_state(resumed, saved)
    model.update_memory_from_features(rest, resumed)
    assert same_state(resumed, uninterrupted)


def test_an_empty_memory_round_trips(model, tmp_path):
    model.new_memory(seed=9).save(tmp_path / "empty.safetensors")
    loaded = FlashVStreamQwen2VLMemory.load(tmp_path / "empty.safetensors")
    assert loaded.frames_seen == 0 and loaded.layout.seed == 9


def _tampered(path, out, metadata=None, tensors=None, drop=()):
    with safe_open(str(path), framework="pt") as f:
        meta = {**f.metadata(), **(metadata or {})}
        values = {name: f.get_tensor(name) for name in f.keys() if name not in drop}  # noqa: SIM118
    values.update(tensors or {})
    save_file(values, str(out), metadata=meta)
    return out


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metadata": {"frames_seen": "8"}}, "frames_seen"),
        ({"metadata": {"frames_seen": "-1"}}, "frames_seen"),
        ({"metadata": {"grid": "[4, 6]"}}, "grid"),
        ({"metadata": {"layout": '{"streaming_mode": "bounded"}'}}, "layout"),
        ({"metadata": {"format": "pickle"}}, "format"),
        ({"tensors": {"csm_weights": torch.tensor([1.0, 1.0, 9.0])}}, "csm_weights"),
        ({"tensors": {"csm_times": torch.tensor([0.0, 1.0, 99.0], dtype=torch.float64)}}, "csm_times"),
        ({"tensors": {"detail_index": torch.tensor([0, 1, 40])}}, "detail_index"),
        ({"tensors": {"csm_features": torch.zeros(3, 4, 31)}}, "detail_full"),
        ({"tensors": {"generator_state": torch.zeros(3, dtype=torch.uint8)}}, "generator_state"),
        ({"drop": ("detail_low",)}, "detail_low"),
    ],
)
def test_a_tampered_memory_file_is_refused_naming_the_field(model, tmp_path, change, field):
    path = tmp_path / "memory.safetensors"
    streamed(model, random_features(7, seed=8), "bounded").save(path)
    bad = _tampered(path, tmp_path / "bad.safetensors", **change)
    with pytest.raises(ValueError, match=field):
        FlashVStreamQwen2VLMemory.load(bad)


def test_a_faithful_file_with_a_short_bank_is_refused(model, tmp_path):
    path = tmp_path / "memory.safetensors"
    streamed(model, random_features(7, seed=8), "faithful").save(path)
    bad = _tampered(path, tmp_path / "bad.safetensors", tensors={"bank_full": torch.zeros(6, 16, 32)})
    with pytest.raises(ValueError, match="bank_full"):
        FlashVStreamQwen2VLMemory.load(bad)


# -- against the offline path ---------------------------------------------------------------------------------


def offline_video_output(model, processor, images, seed):
    """The offline path's memory for the video whose frames are `images`, each tiled to one temporal patch."""
    pixels = processor.preprocess_frames(images, return_tensors="pt")
    rows = patchify_frames(pixels.repeat_interleave(2, dim=0))
    grid = torch.tensor([[len(images), 4, 4]])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model.model.get_video_features(rows, grid, memory_generator=generator)


@pytest.mark.parametrize("count", [1, 2, 3, 4])  # up to K + 1 frames: the first k-means run included
def test_faithful_stream_memory_equals_the_offline_memory_of_its_frames(model, processor, count):
    images = frames(count, seed=11)
    memory = model.new_memory(seed=4, streaming_mode="faithful")
    model.update_memory(processor.preprocess_frames(images, return_tensors="pt")[None], memory)
    with torch.no_grad():
        streamed_out = model.model.read_memory(memory)
    offline = offline_video_output(model, processor, images, seed=4)
    torch.testing.assert_close(streamed_out.pooler_output[0], offline.pooler_output[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(streamed_out.memory_position_ids[0], offline.memory_position_ids[0])


@pytest.mark.parametrize("count", [1, 2, 3])  # up to K frames: no clustering yet
def test_bounded_stream_memory_equals_the_offline_memory_up_to_k_frames(model, processor, count):
    images = frames(count, seed=12)
    memory = model.new_memory(seed=4, streaming_mode="bounded")
    model.update_memory(processor.preprocess_frames(images, return_tensors="pt")[None], memory)
    with torch.no_grad():
        streamed_out = model.model.read_memory(memory)
    offline = offline_video_output(model, processor, images, seed=4)
    torch.testing.assert_close(streamed_out.pooler_output[0], offline.pooler_output[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(streamed_out.memory_position_ids[0], offline.memory_position_ids[0])


def test_past_k_frames_the_modes_share_the_centroids_but_not_their_times(model):
    """Where the definitions differ: faithful CSM times are ordinal (positions in the re-clustered concatenation,
    0..K), bounded ones the members' mean absolute frame index (as offline). The k-means itself is the same."""
    features = random_features(K + 1, seed=13)
    faithful, bounded = streamed(model, features, "faithful"), streamed(model, features, "bounded")
    torch.testing.assert_close(faithful.state.csm_features, bounded.state.csm_features, rtol=0, atol=1e-6)
    features = random_features(20, seed=14)
    faithful, bounded = streamed(model, features, "faithful"), streamed(model, features, "bounded")
    assert faithful.state.csm_times.max() <= K and bounded.state.csm_times.max() > K


# -- generate and StreamingSession ----------------------------------------------------------------------------


def ask_ids(model, processor, memory, question="what is moving here ?", new_tokens=4):
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(text=prompt, num_video_tokens=memory.get_seq_length(), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, video_memory=memory, max_new_tokens=new_tokens, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)  # fmt: skip
    return out.sequences[0, inputs["input_ids"].shape[1] :], torch.stack(out.scores)[:, 0]


def test_generate_from_a_memory_equals_generate_from_the_offline_video(model, processor):
    images = frames(3, seed=15)
    memory = model.new_memory(streaming_mode="faithful")
    model.update_memory(processor.preprocess_frames(images, return_tensors="pt")[None], memory)
    ids, scores = ask_ids(model, processor, memory)
    prompt = "<|vision_start|> <|video_pad|> <|vision_end|> what is moving here ?"
    pixels = processor.preprocess_frames(images, return_tensors="pt").repeat_interleave(2, dim=0)
    inputs = processor(text=prompt, return_tensors="pt")
    inputs["input_ids"] = processor(text=prompt, num_video_tokens=memory.get_seq_length())["input_ids"]
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        out = model.generate(**inputs, pixel_values_videos=patchify_frames(pixels),
                             video_grid_thw=torch.tensor([[3, 4, 4]]), max_new_tokens=4, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)  # fmt: skip
    assert torch.equal(out.sequences[0, inputs["input_ids"].shape[1] :], ids)
    torch.testing.assert_close(torch.stack(out.scores)[:, 0], scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["bounded", "faithful"])
def test_one_generate_over_several_streams_memories_gives_each_row_its_answer_alone(model, processor, mode):
    # streams at different lengths: fewer frames than K, K, and past it (the rows' memories differ in size)
    memories = [streamed(model, random_features(count, seed=20 + count), mode) for count in (2, K, 3 * K + 1)]
    alone = [ask_ids(model, processor, memory) for memory in memories]
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what is moving here ?"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    rows = [processor(text=prompt, num_video_tokens=m.get_seq_length(), return_tensors="pt")["input_ids"][0].tolist()
            for m in memories]  # fmt: skip
    width = max(len(ids) for ids in rows)
    input_ids = torch.tensor([[0] * (width - len(ids)) + ids for ids in rows])  # left-padded
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows])
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, video_memory=memories,
                             max_new_tokens=4, do_sample=False, pad_token_id=0, output_scores=True,
                             return_dict_in_generate=True)  # fmt: skip
    for row, (ids, scores) in enumerate(alone):
        assert torch.equal(out.sequences[row, width:], ids)
        torch.testing.assert_close(torch.stack(out.scores)[:, row], scores, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # beam search keeps each row's beams on its own memory
        beams = model.generate(input_ids=input_ids, attention_mask=attention_mask, video_memory=memories,
                               max_new_tokens=4, num_beams=2, do_sample=False, pad_token_id=0)  # fmt: skip
        for row, (ids, memory) in enumerate(zip(rows, memories)):
            prompt_ids = torch.tensor([ids])
            one = model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids), video_memory=memory,
                                 max_new_tokens=4, num_beams=2, do_sample=False, pad_token_id=0)  # fmt: skip
            assert torch.equal(beams[row, width:], one[0, len(ids) :])
    with pytest.raises(ValueError, match="one memory per row"):
        model.generate(input_ids=input_ids, attention_mask=attention_mask, video_memory=memories[:2], max_new_tokens=1)


def test_answer_together_batches_questions_about_v2_streams_as_asked_one_at_a_time(model, processor, monkeypatch):
    from flash_vstream_hf.streaming import StreamSnapshot, answer_together
    from flash_vstream_hf.streaming.answering import generate_answer

    # the tiny vocabulary decodes the random model's tokens to nothing: compare the token ids themselves
    monkeypatch.setattr(processor, "decode", lambda ids, **kwargs: " ".join(str(int(i)) for i in ids))
    snapshots = [StreamSnapshot(streamed(model, random_features(n, seed=n), "bounded"), float(n)) for n in (1, 5, 12)]
    kwargs = {"max_new_tokens": 4, "do_sample": False}
    alone = [generate_answer(model, processor, "what is moving here ?", snap, kwargs, 0.0) for snap in snapshots]
    together = answer_together(model, processor, [("what is moving here ?", snap) for snap in snapshots], kwargs)
    assert [(a.text, a.new_tokens, a.frames) for a in together] == [(a.text, a.new_tokens, a.frames) for a in alone]
    assert all(len(a.text.split()) == a.new_tokens == 4 for a in together)


@pytest.mark.parametrize("mode", ["bounded", "faithful"])
def test_a_streaming_session_ingests_frames_and_answers(model, processor, mode, tmp_path):
    images = frames(9, seed=16, side=60)
    memory = model.new_memory(seed=2, streaming_mode=mode)
    with StreamingSession(model, processor, memory, generation_kwargs={"max_new_tokens": 3, "do_sample": False},
                          max_batch=4) as session:  # fmt: skip
        session.start(IteratorSource(images, fps=None))
        assert session.wait(timeout=120)
        answer = session.ask("what is moving here ?")
        status = session.status()
    assert status.state == "finished" and status.frames_ingested == 9 and status.frames_failed == 0
    assert answer.frames == 9 and answer.memory_tokens == memory.get_seq_length() and answer.new_tokens == 3
    # the session's memory is the one frame-by-frame ingest gives, whatever the batching
    direct = model.new_memory(seed=2, streaming_mode=mode)
    model.update_memory(processor.preprocess_frames(images, return_tensors="pt")[None], direct)
    assert same_state(memory, direct)
    ids, _ = ask_ids(model, processor, direct, new_tokens=3)
    assert answer.text == processor.decode(ids, skip_special_tokens=True).strip()
    # saved mid-stream and resumed in a new session: the same memory as the uninterrupted stream
    memory.save(tmp_path / "memory.safetensors")
    resumed = FlashVStreamQwen2VLMemory.load(tmp_path / "memory.safetensors")
    more = frames(3, seed=17, side=60)
    with StreamingSession(model, processor, resumed, max_batch=2) as session:
        session.start(IteratorSource(more, fps=None))
        assert session.wait(timeout=120)
    model.update_memory(processor.preprocess_frames(more, return_tensors="pt")[None], direct)
    assert same_state(resumed, direct)


# -- the benchmark ----------------------------------------------------------------------------------------------


def test_benchmark_modes_agree_exactly_on_streams_of_at_most_k_frames_and_report_their_figures():
    from flash_vstream_hf.benchmarks import qwen2vl_memory as bench

    model = bench.tiny_model()
    short = bench.mode_agreement(model, lengths=(bench.K,), seeds=(0,), new_tokens=2)
    assert short["identical_answers"] == 1 and short["max_first_logit_diff"] == 0.0
    longer = bench.mode_agreement(model, lengths=(40,), seeds=(0,), new_tokens=2)
    assert 0.0 <= longer["token_agreement"] <= 1.0 and longer["max_first_logit_diff"] >= 0.0
    rows = {(row["model"], row["frames"]): row for row in bench.memory_figures(model, [10, 50])}
    assert rows[("v2 bounded", 10)]["bytes"] == rows[("v2 bounded", 50)]["bytes"]
    assert rows[("v2 faithful", 50)]["bytes"] > rows[("v2 faithful", 10)]["bytes"]
    assert rows[("v1 tiny", 10)]["bytes"] == rows[("v1 tiny", 50)]["bytes"]


def test_beam_search_and_several_returned_sequences_read_one_memory(model):
    memory = streamed(model, random_features(8, seed=18), "bounded")
    ids = torch.tensor([[START, *[VIDEO] * memory.get_seq_length(), END, 10, 11]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_memory=memory,
                             max_new_tokens=3, num_beams=2, num_return_sequences=2, do_sample=False)  # fmt: skip
    assert out.shape == (2, ids.shape[1] + 3) and memory.frames_seen == 8
    with pytest.raises(ValueError, match="placeholder"):
        model.generate(input_ids=torch.cat([ids[:, :2], ids[:, 3:]], dim=1), video_memory=memory, max_new_tokens=1)
