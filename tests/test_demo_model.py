"""The trained demo model: its training path (gradients through the streaming memory, a loss that falls), the
shipped checkpoint (loadable, small, as accurate as reported), and the demo built on it."""

import json
import random
import time
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from flash_vstream_hf.cli import build_parser, main
from flash_vstream_hf.modeling import FlashVStreamForConditionalGeneration
from flash_vstream_hf.synthetic import QuestionMaker, SyntheticStream, ask
from flash_vstream_hf.synthetic.batches import answer_words, pixel_values, question_batch
from flash_vstream_hf.synthetic.checkpoint import demo_model, demo_model_path
from flash_vstream_hf.synthetic.evaluation import evaluate, format_table, format_template_table, format_wrong
from flash_vstream_hf.synthetic.grounding import GroundingHead, grounded_word_ids
from flash_vstream_hf.synthetic.spec import LAYOUTS, demo_config, demo_processor, with_layout
from flash_vstream_hf.synthetic.training import TrainSettings, stream_prefix, train, train_step

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


def test_training_asks_hard_negatives_only_when_told(monkeypatch):
    from flash_vstream_hf.synthetic import training

    shares = []

    class Recording(QuestionMaker):
        def __init__(self, stream, **kwargs):
            super().__init__(stream, **kwargs)
            shares.append(self.hard_negative_share)

    monkeypatch.setattr(training, "QuestionMaker", Recording)
    model = FlashVStreamForConditionalGeneration(demo_config()).train()
    variants = {layout: with_layout(model, layout) for layout in LAYOUTS}
    for share in (0.0, 0.5):
        settings = TrainSettings(streams_per_step=2, first_stage_length=4, hard_negative_share=share)
        train_step(model, variants, demo_processor(), settings, step=0)
    assert shares == [0.0, 0.0, 0.5, 0.5]


def test_a_few_dozen_steps_make_the_loss_fall(tmp_path):
    settings = TrainSettings(
        steps=40, streams_per_step=8, perception_steps=0, first_stage_steps=40, log_every=5, save_every=1000
    )
    start = time.perf_counter()
    model, processor = train(settings, tmp_path / "model", tmp_path / "log.jsonl")
    assert time.perf_counter() - start < 60
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    assert records[-1]["loss"] < 0.6 * records[0]["loss"]  # the answer loss and the default recipe's grounding loss
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


def test_a_prefix_step_plays_a_sped_up_stretch_into_the_memory_first_and_still_trains_the_vision_tower():
    torch.manual_seed(0)
    model = FlashVStreamForConditionalGeneration(demo_config()).train()
    settings = TrainSettings(
        streams_per_step=2, first_stage_steps=0, min_length=24, max_length=24, prefix_share=1.0,
        prefix_frames=(40, 40), prefix_stride=(5, 5),
    )  # fmt: skip
    assert stream_prefix(settings, 0) == (40, 5)
    assert stream_prefix(replace(settings, first_stage_steps=10), 3) == (0, 1)  # none in the first stage
    assert {stream_prefix(replace(settings, prefix_share=0.0), step) for step in range(50)} == {(0, 1)}
    shares = [stream_prefix(replace(settings, prefix_share=0.3, prefix_frames=(8, 64)), s) for s in range(400)]
    assert 0.2 < sum(frames > 0 for frames, _ in shares) / 400 < 0.4
    assert all(8 <= f <= 64 and 1 <= k <= 5 for f, k in shares if f)
    variants = {layout: with_layout(model, layout) for layout in LAYOUTS}
    added = []

    def counting(handler):
        def add_frames(features, memory):
            added.append(features.shape[1])
            return handler(features, memory)

        return add_frames

    for variant in variants.values():  # count the frames every layout's memory takes
        variant.model._add_frames = counting(variant.model._add_frames)
    result = train_step(model, variants, demo_processor(), settings, step=0)
    assert result["prefix"] == 40 and result["length"] == 24 and sum(added) == 40 + 24
    assert float(model.model.vision_tower.embeddings.patch_embedding.weight.grad.abs().sum()) > 0


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
# shipped), STAR at 100 / 500 / 2,000 / 10,000 frames: now 95.3 / 96.1 / 100.0 / 97.7, recent 92.6 / 92.1 / 97.6 /
# 88.8, long-range 78.4 / 80.5 / 89.0 / 78.6 (recent window: long-range 48.3 / 48.3 / 47.7 / 33.0). The floors are a
# few points below, to absorb numerical changes in the memory code; the lead and the flatness are the issue's
# targets themselves.
LENGTHS = (100, 500, 2000, 10000)
FLOORS = {"now": 0.91, "recent": 0.84, "long-range": 0.75}
LONG_RANGE_LEAD = 0.3  # STAR over the recent window of the same 72 tokens, on long-range questions, at every length
FLAT = 0.05  # every family at 10,000 frames within 5 points of 500 frames


def test_the_shipped_checkpoint_meets_its_targets_on_a_fixed_held_out_set(shipped):
    model, processor = shipped
    start = time.perf_counter()
    scores = evaluate(model, processor, lengths=LENGTHS, layouts=("star", "recent"), streams=8, progress=False)
    print(format_table(scores, LENGTHS, ("star", "recent")))
    assert time.perf_counter() - start < 240  # ~50 s on the machine of 2026-12-01, 132 s on the 2.4x slower one of 12-02
    for family, floor in FLOORS.items():
        for length in LENGTHS:
            assert scores.accuracy("star", length, family) >= floor, (length, family)
        assert abs(scores.accuracy("star", 10000, family) - scores.accuracy("star", 500, family)) <= FLAT, family
    for length in LENGTHS:  # the memory, not the last seconds, answers the long-range questions
        lead = scores.accuracy("star", length, "long-range") - scores.accuracy("recent", length, "long-range")
        assert lead >= LONG_RANGE_LEAD, length
    # Per template: the counts add up to the families', and what the grounding loss and the presence probe were added
    # for holds: "is there a red shape now" (71% without them) and "did a red shape appear" (46%).
    table = format_template_table(scores)
    print(table)
    star_kinds = {kind: n for (layout, kind), n in scores.kind_total.items() if layout == "star"}
    assert sum(star_kinds.values()) == sum(n for (layout, _, _), n in scores.total.items() if layout == "star")
    assert all(kind in table for kind in star_kinds) and len(star_kinds) >= 7
    assert scores.kind_correct["star", "now_present"] >= 0.9 * star_kinds["now_present"]
    assert scores.kind_correct["star", "long_colour"] >= 0.9 * star_kinds["long_colour"]
    # The wrong answers listed are exactly the ones scored wrong.
    wrong = [w for w in scores.wrong if w[0] == "star"]
    assert len(wrong) == sum(star_kinds.values()) - sum(n for (layout, _), n in scores.kind_correct.items() if layout == "star")
    assert all(word != question.answer for _, _, question, word, _ in wrong)
    assert format_wrong(scores).count("\n") == len(wrong)


def test_demo_eval_lists_wrong_answers_and_keeps_to_held_out_seeds(capsys):
    assert main(["demo", "--eval", "--eval-lengths", "30", "--eval-streams", "2", "--eval-first-seed", "500000",
                 "--show-wrong"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "seeds 500000-500001" in out and "wrong answers of STAR:" in out
    listed = [line for line in out.splitlines() if line.startswith("  stream 50000")]
    assert all("truth" in line and "on screen:" in line for line in listed)
    with pytest.raises(SystemExit) as exited:  # refused while parsing, before the model is loaded
        main(["demo", "--eval", "--eval-first-seed", "999990", "--eval-streams", "16"])
    assert exited.value.code == 2 and "training streams" in capsys.readouterr().err


def test_the_demo_plays_a_stream_and_prints_the_score(capsys):
    start = time.perf_counter()
    assert main(["demo", "--seconds", "120"]) == 0
    out = capsys.readouterr().out
    assert "TRAINED" in out and "score:" in out and "long-range" in out
    assert "truth:" in out and time.perf_counter() - start < 60


def test_train_demo_alone_retrains_the_shipped_checkpoint():
    from flash_vstream_hf.commands.train_demo import settings_from_args

    info = json.loads((demo_model_path() / "training.json").read_text())
    assert info["commands"] == ["flash-vstream train-demo --output-dir demo_model"]
    args = build_parser().parse_args(info["commands"][0].split()[1:])
    recorded = info["stages"][0]["settings"]
    assert json.loads(json.dumps(asdict(settings_from_args(args)))) == recorded  # (tuples are lists in JSON)
    # 39 minutes for this recipe's step cost on the machine of 2026-12-01; 93 on the slower one it was rerun on.
    assert info["stages"][0]["steps_done"] == recorded["steps"] and info["train_seconds_total"] < 2 * 3600


def test_train_demo_is_a_registered_command():
    args = build_parser().parse_args(["train-demo", "--steps", "5", "--output-dir", "x"])
    assert args.steps == 5 and args.run.__module__ == "flash_vstream_hf.commands.train_demo"
    assert np.isfinite(TrainSettings().learning_rate)


def test_train_demo_takes_family_weights_and_names_a_wrong_one(capsys):
    args = build_parser().parse_args(["train-demo", "--family-weights", "now=0.2,recent=0.2,long-range=0.6"])
    assert args.family_weights == {"now": 0.2, "recent": 0.2, "long-range": 0.6}
    assert build_parser().parse_args(["train-demo"]).family_weights == TrainSettings().family_weights
    for wrong, named in (("now=0.5,later=0.5", "later"), ("now=lots", "now=lots"), ("now=0", "at least one")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train-demo", "--family-weights", wrong])
        assert named in capsys.readouterr().err
    assert build_parser().parse_args(["train-demo", "--prefix-share", "0.3"]).prefix_share == 0.3
    for wrong in ("1.5", "-0.1", "some"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train-demo", "--prefix-share", wrong])
        assert "--prefix-share" in capsys.readouterr().err
