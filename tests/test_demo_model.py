"""The trained demo model: its training path (gradients through the streaming memory, a loss that falls), the
shipped checkpoint (loadable, small, as accurate as reported), and the demo built on it."""

import json
import random
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from flash_vstream_hf.cli import build_parser, main
from flash_vstream_hf.modeling import FlashVStreamForConditionalGeneration
from flash_vstream_hf.synthetic import QuestionMaker, SyntheticStream, ask
from flash_vstream_hf.synthetic.batches import answer_words, pixel_values, question_batch
from flash_vstream_hf.synthetic.checkpoint import demo_model, demo_model_path
from flash_vstream_hf.synthetic.evaluation import evaluate, format_table, format_template_table
from flash_vstream_hf.synthetic.grounding import GroundingHead, grounded_word_ids
from flash_vstream_hf.synthetic.spec import LAYOUTS, demo_config, demo_processor, with_layout
from flash_vstream_hf.synthetic.training import TrainSettings, train, train_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shipped():
    return demo_model()


def test_pixel_values_match_the_processor():
    frames = SyntheticStream(3).frames(0, 4)
    expected = demo_processor().image_processor(list(frames), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values(frames), expected, atol=1e-5, rtol=0)


def test_update_memory_is_no_grad_and_the_training_path_reaches_the_vision_tower():
    torch.manual_seed(0)
    model = FlashVStreamForConditionalGeneration(demo_config()).train()
    pixels = pixel_values(SyntheticStream(1).frames(0, 8))[None]
    assert not model.update_memory(pixels).state.current.requires_grad  # the frame handler keeps no graph
    settings = TrainSettings(streams_per_step=2, first_stage_steps=0, min_length=24, max_length=24)
    variants = {layout: with_layout(model, layout) for layout in LAYOUTS}
    train_step(model, variants, demo_processor(), settings, step=0)
    for module in (model.model.vision_tower, model.model.multi_modal_projector, model.model.language_model):
        # (CLIP's post_layernorm only feeds its pooled output, which Flash-VStream does not read)
        missing = [n for n, p in module.named_parameters() if p.grad is None and "post_layernorm" not in n]
        assert not missing
    grad = model.model.vision_tower.embeddings.patch_embedding.weight.grad
    assert float(grad.abs().sum()) > 0


def test_a_few_dozen_steps_make_the_loss_fall(tmp_path):
    settings = TrainSettings(
        steps=40, streams_per_step=8, perception_steps=0, first_stage_steps=40, log_every=5, save_every=1000
    )
    start = time.perf_counter()
    model, processor = train(settings, tmp_path / "model", tmp_path / "log.jsonl")
    assert time.perf_counter() - start < 60
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    reloaded, _ = demo_model(tmp_path / "model")  # what train() saves is what demo_model() loads
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_perception_steps_ground_the_frame_tokens_and_leave_no_head_in_the_checkpoint(tmp_path):
    settings = TrainSettings(steps=80, streams_per_step=8, perception_steps=80, log_every=10, save_every=1000)
    model, _ = train(settings, tmp_path / "model", tmp_path / "log.jsonl")
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.7 * records[0]["loss"]
    assert records[-1]["grounded"] > records[0]["grounded"]
    fresh = FlashVStreamForConditionalGeneration(demo_config())
    assert set(model.state_dict()) == set(fresh.state_dict())  # the head is training-only


def test_the_grounding_loss_joins_the_answer_loss_after_perception():
    torch.manual_seed(0)
    model = FlashVStreamForConditionalGeneration(demo_config()).train()
    head = GroundingHead(grounded_word_ids())
    settings = TrainSettings(
        streams_per_step=2, perception_steps=1, first_stage_steps=0, min_length=24, max_length=24, grounding_weight=1.0
    )
    variants = {layout: with_layout(model, layout) for layout in LAYOUTS}
    result = train_step(model, variants, demo_processor(), settings, step=1, head=head)
    assert 0.0 <= result["grounded"] <= 1.0 and result["now"] + result["recent"] + result["long-range"]
    assert float(head.bias.grad.abs().sum()) > 0 and float(head.log_temperature.grad.abs()) > 0
    head.zero_grad()
    train_step(model, variants, demo_processor(), replace(settings, grounding_weight=0.0), step=1, head=head)
    assert head.bias.grad is None or float(head.bias.grad.abs().sum()) == 0


def test_the_shipped_checkpoint_is_small_and_loads(shipped):
    files = {path.name: path.stat().st_size for path in demo_model_path().iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= set(files)
    assert files["model.safetensors"] < 20 * 2**20
    model, processor = shipped
    assert model.config.retrieval_mode == "paper" and model.star_layout.num_tokens(10**6) == 72
    assert processor.tokenizer.padding_side == "left" and processor.video_token_id == model.config.video_token_id
    assert processor.num_video_tokens(1000) == 72


def test_generate_answers_with_the_word_the_evaluation_scores(shipped):
    model, processor = shipped
    stream, rng = SyntheticStream(77), random.Random(0)
    memory = model.update_memory(pixel_values(stream.frames(0, 60))[None])
    maker = QuestionMaker(stream)
    questions = [q for _ in range(4) for f in ("now", "recent", "long-range") if (q := ask(maker, f, 59, rng))]
    assert len(questions) >= 8
    batch = question_batch(processor, questions, memory.get_seq_length(), with_answers=False)
    generated = model.generate(**batch, video_memory=memory, max_new_tokens=1, do_sample=False)
    words = processor.tokenizer.convert_ids_to_tokens(generated[:, -1].tolist())
    logits = model(**batch, video_memory=memory).logits[:, -1]
    assert words == answer_words(processor, logits)


# What the shipped checkpoint really reaches on this fixed held-out set (8 streams, seeds 0-7, measured when it was
# shipped: STAR now 93.0 / 94.5, recent 92.6 / 95.3, long-range 79.3 / 78.0 at 100 / 500 frames; recent window now
# 93.8 / 94.5 and long-range 50.0 / 48.3, chance about 49), a few points below to absorb numerical changes in the
# memory code.
FLOORS = {
    ("star", 100, "now"): 0.90,
    ("star", 500, "now"): 0.91,
    ("star", 100, "recent"): 0.89,
    ("star", 500, "recent"): 0.91,
    ("star", 100, "long-range"): 0.74,
    ("star", 500, "long-range"): 0.73,
    ("recent", 500, "now"): 0.91,
}
LONG_RANGE_LEAD = 0.2  # STAR over the recent window on long-range, at 100 and 500 frames (29 and 30 points shipped)


def test_the_shipped_checkpoint_is_as_accurate_as_reported(shipped):
    model, processor = shipped
    start = time.perf_counter()
    scores = evaluate(model, processor, lengths=(100, 500), layouts=("star", "recent"), streams=8, progress=False)
    print(format_table(scores, (100, 500), ("star", "recent")))
    assert time.perf_counter() - start < 120
    for (layout, length, family), floor in FLOORS.items():
        assert scores.accuracy(layout, length, family) >= floor, (layout, length, family)
    for length in (100, 500):  # the memory, not the last seconds, answers the long-range questions
        lead = scores.accuracy("star", length, "long-range") - scores.accuracy("recent", length, "long-range")
        assert lead >= LONG_RANGE_LEAD, length
    # Per template: the counts add up to the families', and the gains of the grounding stage on "is there a red shape
    # now" (71% before it) and of the presence probe on "did a red shape appear" (46% before it) hold: 97.2% and
    # 100% on this set, 100 and 500 frames, when shipped.
    table = format_template_table(scores)
    print(table)
    star_kinds = {kind: n for (layout, kind), n in scores.kind_total.items() if layout == "star"}
    assert sum(star_kinds.values()) == sum(n for (layout, _, _), n in scores.total.items() if layout == "star")
    assert all(kind in table for kind in star_kinds) and len(star_kinds) >= 7
    assert scores.kind_correct["star", "now_present"] >= 0.9 * star_kinds["now_present"]
    assert scores.kind_correct["star", "long_colour"] >= 0.9 * star_kinds["long_colour"]


def test_the_demo_plays_a_stream_and_prints_the_score(capsys):
    start = time.perf_counter()
    assert main(["demo", "--seconds", "120"]) == 0
    out = capsys.readouterr().out
    assert "TRAINED" in out and "score:" in out and "long-range" in out
    assert "truth:" in out and time.perf_counter() - start < 60


def test_train_demo_is_a_registered_command():
    args = build_parser().parse_args(["train-demo", "--steps", "5", "--output-dir", "x"])
    assert args.steps == 5 and args.run.__module__ == "flash_vstream_hf.train_demo"
    assert np.isfinite(TrainSettings().learning_rate)


def test_train_demo_takes_family_weights_and_names_a_wrong_one(capsys):
    args = build_parser().parse_args(["train-demo", "--family-weights", "now=0.2,recent=0.2,long-range=0.6"])
    assert args.family_weights == {"now": 0.2, "recent": 0.2, "long-range": 0.6}
    assert build_parser().parse_args(["train-demo"]).family_weights == TrainSettings().family_weights
    for wrong, named in (("now=0.5,later=0.5", "later"), ("now=lots", "now=lots"), ("now=0", "at least one")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train-demo", "--family-weights", wrong])
        assert named in capsys.readouterr().err
