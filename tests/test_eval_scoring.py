"""Scoring of `flash-vstream eval`: exact match, letters read from generated answers, the judge's reply format,
and multiple choice by option likelihood (computed right, and free of position bias)."""

import pytest
import torch

from flash_vstream_hf.evaluation.choices import choice_prompt, parse_letter
from flash_vstream_hf.evaluation.judge_prompt import SYSTEM, USER, GarbageVerdict, messages, read_verdict
from flash_vstream_hf.evaluation.likelihood import _prompt_text, option_logprobs
from flash_vstream_hf.evaluation.matching import exact_match, normalise
from flash_vstream_hf.streaming import StreamSnapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPTIONS = ("a red ball", "a blue cube", "two green cones", "nothing at all")


def test_normalised_exact_match():
    assert normalise("The  Red, ball!") == "red ball"
    assert exact_match("A square.", "square", "short") and not exact_match("squares", "square", "short")
    assert exact_match("Yes, there is one.", "yes", "yes_no") and not exact_match("No.", "Yes", "yes_no")
    assert not exact_match("maybe", "yes", "yes_no")


@pytest.mark.parametrize(
    "text, letter",
    [("C", "C"), ("(B) a blue cube", "B"), ("D.", "D"), ("The answer is C.", "C"), ("I pick option B", "B"),
     ("two green cones", "C"), ("A dog is running", None), ("E", None), ("maybe A or B", None), ("", None)],
)  # fmt: skip
def test_letters_read_from_generated_answers(text, letter):
    assert parse_letter(text, OPTIONS) == letter


def test_choice_prompt_lists_the_options():
    prompt = choice_prompt("What is there?", OPTIONS)
    assert prompt.splitlines()[1:3] == ["A. a red ball", "B. a blue cube"] and "letter" in prompt.splitlines()[-1]


def test_judge_prompt_and_replies():
    request = messages("What is he holding?", "a cup", "a mug")
    assert request[0] == {"role": "system", "content": SYSTEM}
    assert "Correct Answer: a cup\nPredicted Answer: a mug\n" in request[1]["content"]
    assert "{'pred': 'yes', 'score': 4.8}" in request[1]["content"] and "{question}" in USER
    verdict = read_verdict("{'pred': 'yes', 'score': 4}")
    assert (verdict.correct, verdict.score) == (True, 4)
    assert read_verdict('```python\n{"pred": "no", "score": 1.9}\n```').score == 1  # int(), as the original
    assert read_verdict("Here: {'pred': 'Yes', 'score': '3'}").correct
    for garbage in ("looks right", "{'pred': 'maybe', 'score': 3}", "{'pred': 'yes', 'score': 9}", "{'pred': 'no'}"):
        with pytest.raises(GarbageVerdict):
            read_verdict(garbage)


@pytest.fixture(scope="module")
def snapshot(model, config):
    size = config.vision_config.image_size
    pixels = torch.randn(1, 5, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        memory = model.update_memory(pixels)
    return StreamSnapshot(memory, 4.0)


def reference_logprob(model, processor, question, option, snapshot) -> float:
    """The sum of the option's token log-probabilities from one full forward, without `logits_to_keep`."""
    prompt = _prompt_text(processor, question)
    tokens = snapshot.memory.get_seq_length()
    prompt_len = processor(text=prompt, num_video_tokens=tokens, return_tensors="pt")["input_ids"].shape[1]
    inputs = processor(text=f"{prompt} {option}", num_video_tokens=tokens, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs, video_memory=snapshot.memory.snapshot()).logits[0].float()
    ids = inputs["input_ids"][0]
    logprobs = torch.log_softmax(logits[:-1], -1).gather(1, ids[1:, None])[:, 0]
    return float(logprobs[prompt_len - 1 :].sum())


def test_option_likelihoods_are_sums_of_the_option_token_logprobs(model, processor, snapshot):
    scores = option_logprobs(model, processor, "What is moving?", OPTIONS, snapshot)
    expected = [reference_logprob(model, processor, "What is moving?", option, snapshot) for option in OPTIONS]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len(set(scores)) == len(scores) and all(score < 0 for score in scores)


def test_no_position_bias_the_chosen_option_moves_with_its_text(model, processor, snapshot):
    from flash_vstream_hf.evaluation.items import EvalItem
    from flash_vstream_hf.evaluation.runner import RunSettings, _choice_scores

    question = "What is moving?"
    scores = option_logprobs(model, processor, question, OPTIONS, snapshot)
    best = OPTIONS[max(range(len(OPTIONS)), key=scores.__getitem__)]
    others = [option for option in OPTIONS if option != best]
    for position in (2, 3, 1):  # the model's favourite option listed as C, D, B: the answer is never "A"
        options = tuple(others[:position] + [best] + others[position:])
        letter = "ABCD"[position]
        item = EvalItem("q", "v", question, letter, "t", "choice", 4.0, options=options)
        result = _choice_scores(model, processor, item, snapshot, "A", RunSettings())
        assert result["likelihood_letter"] == letter and result["correct_likelihood"]
        assert result["generated_letter"] == "A" and not result["correct_generated"]  # both reported
        assert sorted(result["option_logprobs"]) == pytest.approx(sorted(scores), abs=1e-4)
