"""The presence probe: a training-only loss at the asked word of "did X appear" questions."""

from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from flash_vstream_hf.modeling import FlashVStreamForConditionalGeneration
from flash_vstream_hf.synthetic.batches import question_batch
from flash_vstream_hf.synthetic.grounding import grounded_word_ids
from flash_vstream_hf.synthetic.presence_probe import LAYER, PresenceProbe, presence_probe_loss
from flash_vstream_hf.synthetic.questions import Question
from flash_vstream_hf.synthetic.spec import LAYOUTS, demo_config, demo_processor, with_layout, word_vocabulary
from flash_vstream_hf.synthetic.training import TrainSettings, train_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORD_IDS = torch.tensor(grounded_word_ids())


def _question(text, answer, kind):
    return Question(text, answer, "long-range" if kind.startswith("long") else "now", kind, 30, ("yes", "no"))


def test_the_probe_reads_the_asked_word_of_long_range_presence_questions_only():
    questions = [
        _question("did a red shape appear", "yes", "long_colour"),
        _question("is there a blue shape now", "no", "now_present"),  # another family: not probed
        _question("did a triangle appear", "no", "long_shape"),
    ]
    batch = question_batch(demo_processor(), questions, num_video_tokens=6, with_answers=True)
    ids = batch["input_ids"]
    positions = torch.arange(ids.shape[1], dtype=torch.float32).expand(len(questions), -1)
    hidden = torch.zeros(len(questions), ids.shape[1], 4)
    hidden[..., 0] = positions  # the probe below reads the position itself
    probe = PresenceProbe(4)
    with torch.no_grad():
        probe.weight[0] = 1.0
    loss = presence_probe_loss(probe, [None] * LAYER + [hidden], ids, questions, WORD_IDS)
    vocab = word_vocabulary()
    red = int((ids[0] == vocab["red"]).nonzero())
    triangle = int((ids[2] == vocab["triangle"]).nonzero())
    expected = F.binary_cross_entropy_with_logits(
        torch.tensor([red, triangle], dtype=torch.float32), torch.tensor([1.0, 0.0])
    )
    torch.testing.assert_close(loss, expected)
    assert presence_probe_loss(probe, [None] * LAYER + [hidden[1:2]], ids[1:2], questions[1:2], WORD_IDS) is None


def _layer_grads(model, variants, settings, probe) -> list[torch.Tensor]:
    model.zero_grad()
    probe.zero_grad()
    train_step(model, variants, demo_processor(), settings, step=0, probe=probe)
    return [layer.self_attn.q_proj.weight.grad.clone() for layer in model.model.language_model.layers]


def test_the_probe_loss_reaches_the_first_layer_and_nothing_above_it():
    torch.manual_seed(0)
    model = FlashVStreamForConditionalGeneration(demo_config()).train()
    variants = {layout: with_layout(model, layout) for layout in LAYOUTS}
    probe = PresenceProbe(model.config.text_config.hidden_size)
    with torch.no_grad():
        probe.weight.normal_()
    settings = TrainSettings(
        streams_per_step=4,
        first_stage_steps=0,
        min_length=40,
        max_length=40,
        presence_weight=1.0,
        family_weights={"long-range": 1.0},
        layout_weights={"star": 1.0},
    )
    first, second = _layer_grads(model, variants, settings, probe)
    assert float(probe.bias.grad.abs()) > 0
    first_without, second_without = _layer_grads(model, variants, replace(settings, presence_weight=0.0), probe)
    assert probe.bias.grad is None or float(probe.bias.grad.abs()) == 0
    assert not torch.allclose(first, first_without)  # the probe reads the first layer's output ...
    torch.testing.assert_close(second, second_without)  # ... so the layer above gets nothing from it
