"""The converted processor gives the token ids the original gave for the same prompt (docs/original_model.md,
"Prompt", "Tokenisation").

The original prompt is built with `conv_vicuna_v1` and tokenised by `tokenizer_image_token` with the slow
sentencepiece LlamaTokenizer of transformers 4.31 (legacy), restated in `reference_original.py` on a
sentencepiece model trained here with LLaMA's settings. The converted processor renders the chat template and
expands `<video>` to N placeholder ids; both must agree id for id, -200 standing for the N placeholders.
"""

import random

import pytest
from transformers import AutoProcessor, AutoTokenizer, LlamaTokenizer

from flash_vstream_hf import FlashVStreamProcessor
from flash_vstream_hf.conversion.tokenizer import build_tokenizer
from flash_vstream_hf.tiny import tiny_config

from .original_layout import VICUNA_SYSTEM, sentencepiece_processor, write_tokenizer
from .reference_original import slow_llama_tokenize, tokenizer_image_token, vicuna_v1_prompt

QUESTIONS = [
    "What is happening in the video?",
    "Describe the scene in detail.\nWhat color is the car?",
    "  two leading spaces, two  inside and a trailing one ",
    " One leading space",
    "How many people are there in 2024? 3.14 or 42?",
    "Ünïcödé, 日本語 and emoji 🙂 (byte fallback)",
    "tab\tseparated\n\nblank line",
]
VIDEO_TOKENS = 17  # any count; the memory decides it


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def processor(folder):
    from transformers import CLIPImageProcessorPil

    return FlashVStreamProcessor.from_model_config(tiny_config(), CLIPImageProcessorPil(), build_tokenizer(folder))


def original_ids(prompt: str) -> list[int]:
    sp = sentencepiece_processor()
    return tokenizer_image_token(prompt, lambda text: slow_llama_tokenize(sp, text, {"</s>": 2}), sp.bos_id())


def expand(ids: list[int], video_token_id: int) -> list[int]:
    return [i for token in ids for i in ([video_token_id] * VIDEO_TOKENS if token == -200 else [token])]


def user_turn(question: str, video: bool = True) -> list[dict]:
    content = [{"type": "text", "text": question}]
    if video:
        content.insert(0, {"type": "video"})
    return [{"role": "user", "content": content}]


def test_chat_template_renders_the_vicuna_v1_prompt(processor):
    for question in QUESTIONS:
        ours = processor.apply_chat_template(user_turn(question), add_generation_prompt=True)
        original = vicuna_v1_prompt([("USER", "<image>\n" + question), ("ASSISTANT", None)], system=VICUNA_SYSTEM)
        assert ours == original.replace("<image>", "<video>")


@pytest.mark.parametrize("question", QUESTIONS)
def test_single_turn_video_prompt_ids_match_the_original(processor, question):
    prompt = processor.apply_chat_template(user_turn(question), add_generation_prompt=True)
    ours = processor(text=prompt, num_video_tokens=VIDEO_TOKENS)["input_ids"][0]
    assert ours == expand(original_ids(prompt.replace("<video>", "<image>")), processor.video_token_id)


def test_text_after_the_placeholder_starts_with_the_dummy_prefix(processor):
    """`tokenizer_image_token` tokenises "\\n{question} ASSISTANT:" on its own: sentencepiece's dummy prefix
    gives a lone `▁` before the newline byte (29871, 13 with the LLaMA vocabulary)."""
    sp = sentencepiece_processor()
    prompt = processor.apply_chat_template(user_turn("Hi"), add_generation_prompt=True)
    ids = processor(text=prompt, num_video_tokens=VIDEO_TOKENS)["input_ids"][0]
    after = ids[ids.index(processor.video_token_id) + VIDEO_TOKENS :]
    assert after[:2] == [sp.piece_to_id("▁"), sp.piece_to_id("<0x0A>")]
    assert ids[0] == sp.bos_id() and ids.count(sp.bos_id()) == 1


def test_text_only_and_multi_turn_prompts_match_the_original(processor):
    text_only = processor.apply_chat_template(user_turn(QUESTIONS[1], video=False), add_generation_prompt=True)
    assert processor(text=text_only)["input_ids"][0] == original_ids(text_only)
    turns = user_turn(QUESTIONS[0]) + [
        {"role": "assistant", "content": [{"type": "text", "text": "A dog runs."}]},
        {"role": "user", "content": [{"type": "text", "text": "And then?"}]},
    ]
    prompt = processor.apply_chat_template(turns, add_generation_prompt=True)
    original = vicuna_v1_prompt(
        [
            ("USER", "<image>\n" + QUESTIONS[0]),
            ("ASSISTANT", "A dog runs."),
            ("USER", "And then?"),
            ("ASSISTANT", None),
        ],
        system=VICUNA_SYSTEM,
    )
    assert prompt == original.replace("<image>", "<video>")
    ours = processor(text=prompt, num_video_tokens=VIDEO_TOKENS)["input_ids"][0]
    assert ours == expand(original_ids(original), processor.video_token_id)


def test_any_text_tokenises_as_sentencepiece_does(folder):
    """Random text around a placeholder, including chunks that start with spaces, where transformers 5's own
    LlamaTokenizer drops sentencepiece's dummy prefix (so this test fails with it: see the last assertion)."""
    tokenizer, stock = build_tokenizer(folder), LlamaTokenizer.from_pretrained(folder, legacy=True)
    sp = sentencepiece_processor()
    alphabet = list("ab cd  USER:?.,1234\n\té日🙂") + [" ", "  ", "\n"]
    rng = random.Random(0)
    stock_mismatches = 0
    for _ in range(500):
        before, after = ("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(2))
        ours = tokenizer(before + "<video>" + after)["input_ids"]
        original = tokenizer_image_token(before + "<image>" + after, lambda t: slow_llama_tokenize(sp, t, {}), 1)
        assert ours == [tokenizer.video_token_id if i == -200 else i for i in original], (before, after)
        stock_mismatches += stock(after, add_special_tokens=False)["input_ids"] != sp.encode(after)
    assert stock_mismatches > 0


def test_saved_tokenizer_and_processor_keep_the_behaviour(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(AutoTokenizer.from_pretrained(tmp_path)).__name__ == "TokenizersBackend"
    prompt = processor.apply_chat_template(user_turn(QUESTIONS[2]), add_generation_prompt=True)
    assert (
        reloaded(text=prompt, num_video_tokens=3)["input_ids"]
        == processor(text=prompt, num_video_tokens=3)["input_ids"]
    )
    assert reloaded.tokenizer.padding_side == "left" and reloaded.tokenizer.pad_token_id == 0
    answer = "A man walks  his dog."
    ids = reloaded.tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert reloaded.decode(ids + [2], skip_special_tokens=True) == answer
