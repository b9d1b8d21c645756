"""The processor takes the keyword arguments every transformers processor takes: frame sampling (`fps`,
`num_frames`, `do_sample_frames`), nested `videos_kwargs` / `text_kwargs`, `max_length` / `truncation`,
`padding_side`, `return_assistant_tokens_mask`; video URLs; and it reloads silently as the PIL image processor."""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from flash_vstream_hf.processing.video_io import read_video_frames
from flash_vstream_hf.tiny import synthetic_frame, tiny_processor, tiny_tokenizer, write_synthetic_video

from .helpers import http_server

BACKENDS = ["decord", "pyav"]
PROMPT = "USER: <video>\nWhat? ASSISTANT:"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 5-second, 50-frame video at 10 fps."""
    return write_synthetic_video(tmp_path_factory.mktemp("kwargs") / "clip.mp4", num_frames=50, fps=10)


def video_chat(video: dict, question: str = "What?", answer: str | None = None) -> list[dict]:
    chat = [{"role": "user", "content": [video, {"type": "text", "text": question}]}]
    if answer is not None:
        chat.append({"role": "assistant", "content": answer})
    return chat


def count_video_tokens(processor, batch) -> list[int]:
    return (torch.as_tensor(batch["input_ids"]) == processor.video_token_id).sum(-1).tolist()


def pixels_of(processor, frames: list[np.ndarray]) -> np.ndarray:
    """`[T, 3, H, W]` preprocessed frames of an already decoded video."""
    return processor(text="<video>", videos=np.stack(frames))["pixel_values_videos"][0]


# -- frame sampling: num_frames, do_sample_frames, fps, video_backend ---------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_num_frames_samples_evenly_from_a_video_file(processor, clip, backend):
    batch = processor(text=PROMPT, videos=clip, num_frames=4, video_backend=backend)
    every_frame = [frame.image for frame in read_video_frames(clip, fps=None, backend=backend)]
    expected = pixels_of(processor, [every_frame[i] for i in (0, 12, 25, 37)])  # floor(k * 50 / 4)
    np.testing.assert_array_equal(batch["pixel_values_videos"][0], expected)
    assert count_video_tokens(processor, batch) == [processor.num_video_tokens(4)]


def test_num_frames_samples_arrays_and_frame_lists_too(processor):
    frames = [synthetic_frame(i) for i in range(10)]
    expected = pixels_of(processor, [frames[i] for i in (0, 3, 6)])  # floor(k * 10 / 3)
    for video in (np.stack(frames), frames):
        result = processor(text="<video>", videos=video, num_frames=3)["pixel_values_videos"][0]
        np.testing.assert_array_equal(result, expected)


def test_nested_videos_kwargs_and_text_kwargs_are_the_flat_ones(processor, clip):
    prompts = ["<video> a", "<video> a longer one"]
    flat = processor(text=prompts, videos=[clip, clip], num_frames=3, padding_side="right", return_tensors="pt")
    nested = processor(
        text=prompts,
        videos=[clip, clip],
        videos_kwargs={"num_frames": 3},
        text_kwargs={"padding_side": "right"},
        return_tensors="pt",
    )
    for key in ("input_ids", "attention_mask", "pixel_values_videos", "video_frame_mask"):
        torch.testing.assert_close(nested[key], flat[key])
    assert nested["pixel_values_videos"].shape[1] == 3 and nested["attention_mask"][0, -1] == 0  # padded right


def test_num_frames_through_the_chat_template(processor, clip):
    batch = processor.apply_chat_template(
        video_chat({"type": "video", "path": clip}),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        processor_kwargs={"num_frames": 6},
    )
    assert np.asarray(batch["pixel_values_videos"]).shape[1] == 6


def test_do_sample_frames_false_decodes_every_frame(processor, clip):
    assert np.shape(processor(text=PROMPT, videos=clip, do_sample_frames=False)["pixel_values_videos"])[1] == 50
    assert np.shape(processor(text=PROMPT, videos=clip, do_sample_frames=True)["pixel_values_videos"])[1] == 5
    batch = processor.apply_chat_template(
        video_chat({"type": "video", "path": clip}),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        processor_kwargs={"do_sample_frames": False},
    )
    assert np.asarray(batch["pixel_values_videos"]).shape[1] == 50
    assert count_video_tokens(processor, batch) == [processor.num_video_tokens(50)]


def test_processor_defaults_fps_and_video_backend_still_apply(config, clip):
    assert np.shape(tiny_processor(config, fps=2)(text=PROMPT, videos=clip)["pixel_values_videos"])[1] == 10
    with pytest.raises(ValueError, match="opencv"):  # the processor's video_backend is the one used
        tiny_processor(config, video_backend="opencv")(text=PROMPT, videos=clip)
    with pytest.raises(ValueError, match="opencv"):
        tiny_processor(config)(text=PROMPT, videos=clip, videos_kwargs={"video_backend": "opencv"})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_frames": 4, "fps": 2}, "fps or num_frames, not both"),
        ({"do_sample_frames": False, "fps": 2}, "do_sample_frames=False"),
        ({"do_sample_frames": False, "num_frames": 2}, "do_sample_frames=False"),
        ({"num_frames": 51}, "51 frames.*50"),
        ({"num_frames": 0}, "num_frames"),
    ],
)
def test_contradictory_sampling_raises_clear_errors(processor, clip, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(text=PROMPT, videos=clip, **kwargs)


def test_unknown_keyword_arguments_are_still_refused(processor):
    with pytest.raises(TypeError, match="frames_per_second"):
        processor(text="hi", frames_per_second=2)
    with pytest.raises(ValueError, match="images_kwargs"):
        processor(text="hi", images_kwargs={"do_resize": False})
    with pytest.raises(ValueError, match="return_overflowing_tokens"):
        processor(text="hi", return_overflowing_tokens=True)


def test_frame_preprocessing_kwargs_reach_the_image_processor(processor):
    video = np.stack([synthetic_frame(i) for i in range(2)])
    plain = processor(text="<video>", videos=video)["pixel_values_videos"]
    unnormalised = processor(text="<video>", videos=video, videos_kwargs={"do_normalize": False})["pixel_values_videos"]
    assert plain.shape == unnormalised.shape and 0 <= unnormalised.min() and unnormalised.max() <= 1
    assert not np.allclose(plain, unnormalised)


# -- padding side, max_length, truncation ---------------------------------------------------------------------------


def test_padding_side_left_and_right(processor):
    prompts = ["short", "a longer prompt"]
    default = processor(text=prompts, return_tensors="pt")
    left = processor(text=prompts, padding_side="left", return_tensors="pt")
    right = processor(text=prompts, padding_side="right", return_tensors="pt")
    torch.testing.assert_close(default["input_ids"], left["input_ids"])  # the tokenizer pads on the left
    pad = processor.tokenizer.pad_token_id
    assert left["input_ids"][0, 0] == pad and left["attention_mask"][0, 0] == 0
    assert right["input_ids"][0, -1] == pad and right["attention_mask"][0, -1] == 0
    length = int(right["attention_mask"][0].sum())
    assert right["input_ids"][0, :length].tolist() == left["input_ids"][0, -length:].tolist()


def test_max_length_pads_and_truncates_text(processor):
    ids = processor(text="abcdefghij")["input_ids"][0]  # BOS + dummy prefix + 10 characters
    assert processor(text="abcdefghij", max_length=5, truncation=True)["input_ids"][0] == ids[:5]
    assert processor(text="abcdefghij", max_length=5, padding=False)["input_ids"][0] == ids[:5]  # as tokenizers do
    padded = processor(text="abc", padding="max_length", max_length=9, return_tensors="pt")
    assert padded["input_ids"].shape == (1, 9) and padded["attention_mask"][0].sum() == 5


def test_truncation_keeps_the_video_block_whole(processor):
    """The decision: truncation cuts text only; it raises when it would cut into the `<video>` placeholders."""
    video = np.zeros((2, 8, 8, 3), np.uint8)
    tokens = processor.num_video_tokens(2)
    full = processor(text=PROMPT, videos=video)["input_ids"][0]
    start = full.index(processor.video_token_id)
    limit = start + tokens + 3  # the placeholders and 3 tokens of the text after them
    cut = processor(text=PROMPT, videos=video, max_length=limit, truncation=True)["input_ids"][0]
    assert cut == full[:limit] and cut.count(processor.video_token_id) == tokens
    with pytest.raises(ValueError, match=r"prompt 1 .*max_length=20.*<video>"):
        processor(text=["hi", PROMPT], videos=[None, video], max_length=20, truncation=True)


def test_left_truncation_also_keeps_the_video_block_whole(config):
    processor = tiny_processor(config)
    processor.tokenizer.truncation_side = "left"
    video = np.zeros((2, 8, 8, 3), np.uint8)
    full = processor(text=PROMPT, videos=video)["input_ids"][0]
    limit = len(full) - 2  # drops BOS and the dummy prefix
    assert processor(text=PROMPT, videos=video, max_length=limit, truncation=True)["input_ids"][0] == full[2:]
    with pytest.raises(ValueError, match="<video>"):
        processor(text=PROMPT, videos=video, max_length=limit - 10, truncation=True)


def test_pad_to_multiple_of_and_no_attention_mask(processor):
    batch = processor(text=["abc", "abcdefg"], pad_to_multiple_of=8, return_attention_mask=False, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 16) and "attention_mask" not in batch


# -- the tiny tokenizer pads on the left, so batched answers are the single ones -----------------------------------


def test_tiny_tokenizer_pads_on_the_left_so_batched_generation_matches(tiny):
    model, processor = tiny
    assert tiny_tokenizer().padding_side == "left" and processor.tokenizer.padding_side == "left"
    prompts = ["USER: Hi ASSISTANT:", "USER: What is a much longer question? ASSISTANT:"]
    generate = {"max_new_tokens": 6, "do_sample": False}
    batch = processor(text=prompts, return_tensors="pt")
    with torch.no_grad():
        batched = model.generate(**batch, **generate)[:, batch["input_ids"].shape[1] :]
        for row, prompt in zip(batched, prompts):
            single = processor(text=prompt, return_tensors="pt")
            alone = model.generate(**single, **generate)[0, single["input_ids"].shape[1] :]
            assert row.tolist() == alone.tolist()


# -- assistant token masks -------------------------------------------------------------------------------------------


def masked_text(processor, input_ids, mask) -> str:
    ids = [i for i, m in zip(list(input_ids), list(mask)) if m]
    return processor.tokenizer.decode(ids)


def assert_runs(mask, count: int) -> None:
    """`mask` holds exactly `count` contiguous runs of ones."""
    values = [0, *list(mask), 0]
    assert sum(1 for a, b in itertools.pairwise(values) if (a, b) == (0, 1)) == count


def test_assistant_tokens_mask_covers_the_answers_of_a_text_chat(processor):
    chat = [
        {"role": "user", "content": "What happens?"},
        {"role": "assistant", "content": "A square moves."},
        {"role": "user", "content": [{"type": "text", "text": "Which way?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Right."}]},
    ]
    text = processor.apply_chat_template(chat)
    assert text.endswith("USER: What happens? ASSISTANT: A square moves.</s>USER: Which way? ASSISTANT: Right.</s>")
    batch = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = batch["input_ids"][0], batch["assistant_masks"][0]
    assert len(mask) == len(ids)
    assert masked_text(processor, ids, mask) == "A square moves.</s>Right.</s>"
    assert_runs(mask, 2)
    assert ids[-1] == processor.tokenizer.eos_token_id and mask[-1] == 1
    assert "offset_mapping" not in batch and "text_replacement_offsets" not in batch


def test_assistant_tokens_mask_skips_the_video_placeholders(processor, clip):
    chat = video_chat({"type": "video", "path": clip}, answer="A square moves.")
    batch = processor.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = batch["input_ids"][0], batch["assistant_masks"][0]
    assert count_video_tokens(processor, batch) == [processor.num_video_tokens(5)]
    assert masked_text(processor, ids, mask) == "A square moves.</s>"
    assert_runs(mask, 1)
    assert not mask[ids == processor.video_token_id].any()


def test_assistant_tokens_mask_of_a_padded_mixed_batch(processor, clip):
    chats = [
        video_chat({"type": "video", "path": clip}, answer="Left."),
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}],
    ]
    batch = processor.apply_chat_template(
        chats, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    assert batch["assistant_masks"].shape == batch["input_ids"].shape
    for ids, mask, answer in zip(batch["input_ids"], batch["assistant_masks"], ["Left.</s>", "Hello there.</s>"]):
        assert masked_text(processor, ids, mask) == answer
    assert batch["attention_mask"][1, 0] == 0 and batch["assistant_masks"][1, 0] == 0  # left padding


# -- video URLs --------------------------------------------------------------------------------------------------------


def test_file_and_http_urls_give_the_frames_of_the_path(processor, clip):
    local = processor(text=PROMPT, videos=clip, video_backend="pyav")["pixel_values_videos"]
    file_url = processor(text=PROMPT, videos="file://" + os.path.abspath(clip))["pixel_values_videos"]
    np.testing.assert_allclose(file_url, processor(text=PROMPT, videos=clip)["pixel_values_videos"])
    with http_server(os.path.dirname(clip)) as base:
        url = f"{base}/{os.path.basename(clip)}"
        direct = processor(text=PROMPT, videos=url, num_frames=3)
        chat = processor.apply_chat_template(
            video_chat({"type": "video", "url": url}), add_generation_prompt=True, tokenize=True, return_dict=True
        )
    np.testing.assert_array_equal(chat["pixel_values_videos"], local)
    assert direct["pixel_values_videos"].shape[1] == 3


# -- saved processors reload silently as the PIL image processor ------------------------------------------------------

RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import flash_vstream_hf  # registers AutoProcessor
    from transformers import AutoProcessor
    from flash_vstream_hf import FlashVStreamProcessor

    folder, frames = sys.argv[1:3]
    results = {}
    for name, load in [("auto", AutoProcessor.from_pretrained), ("direct", FlashVStreamProcessor.from_pretrained)]:
        processor = load(folder)
        pixels = processor(text="<video>", videos=np.load(frames))["pixel_values_videos"]
        results[name] = {"class": type(processor.image_processor).__name__, "pixels": pixels.tolist()}
    print(json.dumps(results))
    """
)


def test_a_saved_processor_reloads_silently_as_the_pil_image_processor(processor, tmp_path):
    processor.save_pretrained(tmp_path / "saved")
    video = np.stack([synthetic_frame(i) for i in range(3)])
    np.save(tmp_path / "frames.npy", video)
    expected = processor(text="<video>", videos=video)["pixel_values_videos"]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "warning"}  # transformers' warnings reach stderr
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path / "saved"), str(tmp_path / "frames.npy")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "torchvision" not in result.stderr.lower() and "falling back" not in result.stderr.lower(), result.stderr
    for loaded in json.loads(result.stdout).values():
        assert loaded["class"] == type(processor.image_processor).__name__ == "CLIPImageProcessorPil"
        np.testing.assert_array_equal(np.asarray(loaded["pixels"], dtype=np.float32), expected)
