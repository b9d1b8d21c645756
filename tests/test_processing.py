"""The processor: placeholder expansion, chunk-wise tokenisation, the vicuna_v1 template, video inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from flash_vstream_hf import FlashVStreamConfig, FlashVStreamProcessor
from flash_vstream_hf.modeling.star_memory import StarLayout
from flash_vstream_hf.processing import SYSTEM_PROMPT
from flash_vstream_hf.tiny import synthetic_frame, tiny_tokenizer, write_synthetic_video


def count_video_tokens(processor, batch) -> list[int]:
    return (torch.as_tensor(batch["input_ids"]) == processor.video_token_id).sum(-1).tolist()


def test_token_counts_follow_the_memory_for_1_to_30_frames(processor, model):
    released = FlashVStreamProcessor(image_processor=processor.image_processor, tokenizer=tiny_tokenizer())
    released_layout = StarLayout.from_config(FlashVStreamConfig())
    for frames in range(1, 31):
        assert released.num_video_tokens(frames) == released_layout.num_tokens(frames)
        assert processor.num_video_tokens(frames) == model.star_layout.num_tokens(frames)


def test_videos_expand_the_placeholder_and_give_pixel_values(processor, config):
    video = np.stack([synthetic_frame(i) for i in range(9)])
    batch = processor(text="USER: <video>\nWhat? ASSISTANT:", videos=video, return_tensors="pt")
    size = config.vision_config.image_size
    assert batch["pixel_values_videos"].shape == (1, 9, 3, size, size)
    assert count_video_tokens(processor, batch) == [processor.num_video_tokens(9)]
    assert batch["pixel_values_videos"].dtype == torch.float32


def test_text_is_tokenised_in_chunks_around_the_placeholder(processor):
    """BOS once; the text after the placeholder is tokenised on its own (docs/original_model.md, "Tokenisation")."""
    tokenizer = processor.tokenizer
    ids = processor(text="USER: <video>\nhi ASSISTANT:", num_video_tokens=3)["input_ids"][0]
    before = tokenizer("USER: ")["input_ids"]
    after = tokenizer("\nhi ASSISTANT:", add_special_tokens=False)["input_ids"]
    assert ids == before + [processor.video_token_id] * 3 + after
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.convert_ids_to_tokens(after[:2]) == ["▁", "<0x0A>"]  # the dummy prefix of a fresh chunk


def test_chat_template_is_vicuna_v1(processor):
    chat = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": "A square moves."},
        {"role": "user", "content": "Which way?"},
    ]
    text = processor.apply_chat_template(chat, add_generation_prompt=True)
    assert text == (
        f"{SYSTEM_PROMPT} USER: <video>\nWhat happens? ASSISTANT: A square moves.</s>USER: Which way? ASSISTANT:"
    )
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert processor.apply_chat_template(system, add_generation_prompt=True) == "Be brief. USER: Hi ASSISTANT:"


def test_chat_template_decodes_a_video_file_by_timestamp(processor, tmp_path):
    path = write_synthetic_video(tmp_path / "clip.mp4", num_frames=50, fps=10)  # 5 seconds
    chat = [{"role": "user", "content": [{"type": "video", "path": str(path)}, {"type": "text", "text": "What?"}]}]
    for fps, frames in [(None, 5), (2, 10)]:
        kwargs = {"processor_kwargs": {"fps": fps}} if fps else {}
        batch = processor.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", **kwargs
        )
        assert batch["pixel_values_videos"].shape[1] == frames
        assert count_video_tokens(processor, batch) == [processor.num_video_tokens(frames)]


def test_frame_lists_arrays_and_tensors_are_the_same_video(processor):
    frames = [synthetic_frame(i) for i in range(4)]
    prompt = "<video> x"
    forms = [frames, [Image.fromarray(f) for f in frames], np.stack(frames), torch.from_numpy(np.stack(frames))]
    results = [processor(text=prompt, videos=form)["pixel_values_videos"] for form in forms]
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-6)


def test_a_batch_of_prompts_and_videos_is_padded(processor):
    videos = [np.stack([synthetic_frame(i) for i in range(3)]), np.stack([synthetic_frame(i + 5) for i in range(3)])]
    batch = processor(text=["<video> short", "<video> a longer question"], videos=videos, return_tensors="pt")
    assert batch["input_ids"].shape[0] == 2 and batch["pixel_values_videos"].shape[:2] == (2, 3)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"text": "<video> a", "videos": np.zeros((0, 8, 8, 3), np.uint8)}, ValueError, "zero frames"),
        ({"text": "no placeholder", "videos": np.zeros((2, 8, 8, 3), np.uint8)}, ValueError, "no <video> placeholder"),
        ({"text": "<video><video>", "num_video_tokens": 2}, ValueError, "one <video> placeholder"),
        ({"text": "<video> a"}, ValueError, "neither videos nor num_video_tokens"),
        (
            {"text": ["<video> a", "<video> b"], "videos": np.zeros((2, 8, 8, 3), np.uint8)},
            ValueError,
            "1 videos for 2",
        ),
        (
            {"text": "<video> a", "videos": np.zeros((2, 8, 8, 3), np.uint8), "num_video_tokens": 3},
            ValueError,
            "not both",
        ),
        ({"text": "<video> a", "videos": "/nonexistent/video.mp4"}, FileNotFoundError, "video file not found"),
        ({"text": "<video> a", "videos": np.zeros((8, 8), np.uint8)[None]}, ValueError, "frames, height, width"),
    ],
)
def test_bad_inputs_raise_clear_errors(processor, kwargs, error, message):
    with pytest.raises(error, match=message):
        processor(**kwargs)


def test_videos_of_different_lengths_are_zero_padded_with_a_frame_mask(processor):
    short, long = np.stack([synthetic_frame(i) for i in range(2)]), np.stack([synthetic_frame(i) for i in range(5)])
    batch = processor(text=["<video> a", "<video> b"], videos=[short, long], return_tensors="pt")
    pixels, frame_mask = batch["pixel_values_videos"], batch["video_frame_mask"]
    assert pixels.shape[:2] == (2, 5) and pixels.dtype == torch.float32
    assert frame_mask.dtype == torch.int64 and frame_mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    alone = processor(text="<video> a", videos=short, return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(pixels[0, :2], alone[0])
    assert not pixels[0, 2:].any()  # padded at the end of the frame axis
    assert count_video_tokens(processor, batch) == [processor.num_video_tokens(2), processor.num_video_tokens(5)]
    assert "video_frame_mask" in processor.model_input_names


def test_a_text_only_prompt_in_a_video_batch_gets_no_frames(processor):
    video = np.stack([synthetic_frame(i) for i in range(3)])
    for videos in ([video, None], [video], [[video], []]):  # one per prompt, one per placeholder, chat-template style
        batch = processor(text=["<video> what?", "no video here"], videos=videos, return_tensors="pt")
        assert batch["video_frame_mask"].tolist() == [[1, 1, 1], [0, 0, 0]]
        assert not batch["pixel_values_videos"][1].any()
        assert count_video_tokens(processor, batch) == [processor.num_video_tokens(3), 0]
        text_only = processor(text="no video here")["input_ids"][0]
        length = int(batch["attention_mask"][1].sum())
        assert batch["input_ids"][1, -length:].tolist() == text_only  # padded on the left


def test_a_mixed_batch_of_conversations_through_the_chat_template(processor, tmp_path):
    path = write_synthetic_video(tmp_path / "clip.mp4", num_frames=30, fps=10)  # 3 frames at 1 fps
    chats = [
        [{"role": "user", "content": [{"type": "video", "path": path}, {"type": "text", "text": "What?"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "Just text."}]}],
    ]
    batch = processor.apply_chat_template(
        chats, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert batch["pixel_values_videos"].shape[:2] == (2, 3)
    assert batch["video_frame_mask"].tolist() == [[1, 1, 1], [0, 0, 0]]
    assert count_video_tokens(processor, batch) == [processor.num_video_tokens(3), 0]
    prompt = processor.apply_chat_template(chats[1], add_generation_prompt=True)
    assert "<video>" not in prompt
    length = int(batch["attention_mask"][1].sum())
    assert batch["input_ids"][1, -length:].tolist() == processor(text=prompt)["input_ids"][0]


def test_a_placeholder_without_its_video_names_the_prompt(processor):
    video = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="prompt 1 holds <video> but has no video"):
        processor(text=["<video> a", "<video> b"], videos=[video, None])
    with pytest.raises(ValueError, match="prompt 1 holds <video> but neither videos nor num_video_tokens"):
        processor(text=["a", "<video> b"])


def test_unreadable_video_file_raises(processor, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="broken.mp4"):
        processor(text="<video> a", videos=str(broken))


def test_processor_round_trips_with_its_settings(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = FlashVStreamProcessor.from_pretrained(tmp_path)
    assert loaded.chat_template == processor.chat_template
    assert [loaded.num_video_tokens(n) for n in range(1, 12)] == [processor.num_video_tokens(n) for n in range(1, 12)]
    assert loaded.video_token_id == processor.video_token_id and loaded.fps == processor.fps


def test_tokenizer_without_the_video_token_is_rejected(processor):
    with pytest.raises(ValueError, match="no token '<clip>'"):
        FlashVStreamProcessor(
            image_processor=processor.image_processor, tokenizer=tiny_tokenizer(), video_token="<clip>"
        )
