"""Batches whose videos differ: each sample gets exactly the answer it gets alone, padding frames never enter a
memory, and a text-only sample can sit next to a video one."""

import pytest
import torch
from transformers import pipeline

from flash_vstream_hf.tiny import write_synthetic_video

from .helpers import prompt_inputs

NEW_TOKENS = 6


def left_padded(processor, prompts: list[dict]) -> dict:
    """One batch from prompts tokenised one at a time, padded on the left as generation needs."""
    ids = [p["input_ids"][0].tolist() for p in prompts]
    return processor.tokenizer.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt")


def answer_alone(model, prompt: dict, pixels: torch.Tensor | None) -> list[int]:
    kwargs = {} if pixels is None else {"pixel_values_videos": pixels[None]}
    out = model.generate(**prompt, **kwargs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, prompt["input_ids"].shape[1] :].tolist()


def padded_videos(videos: list[torch.Tensor | None], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, T_max, 3, H, W]` zero-padded at the end and the `[B, T_max]` mask of real frames."""
    longest = max(0 if v is None else v.shape[0] for v in videos)
    pixels = torch.zeros(len(videos), longest, 3, size, size)
    mask = torch.zeros(len(videos), longest, dtype=torch.long)
    for i, video in enumerate(videos):
        if video is not None:
            pixels[i, : video.shape[0]] = video
            mask[i, : video.shape[0]] = 1
    return pixels, mask


@pytest.mark.parametrize("lengths", [(4, 30), (30, 4, 9)], ids=["short-long", "three-lengths"])
def test_videos_of_different_lengths_answer_as_they_do_alone(model, processor, frames, lengths):
    videos = [frames(n, seed=i)[0] for i, n in enumerate(lengths)]
    prompts = [
        prompt_inputs(processor, processor.num_video_tokens(n), f"what is in clip {i}?") for i, n in enumerate(lengths)
    ]
    pixels, mask = padded_videos(videos, model.config.vision_config.image_size)
    batch = left_padded(processor, prompts)
    together = model.generate(
        **batch, pixel_values_videos=pixels, video_frame_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False
    )
    answers = together[:, batch["input_ids"].shape[1] :].tolist()
    assert answers == [answer_alone(model, p, v) for p, v in zip(prompts, videos)]


def test_padding_frames_never_enter_the_memory(model, frames):
    video = frames(5)[0]
    pixels, mask = padded_videos([video, frames(9, seed=1)[0]], model.config.vision_config.image_size)
    memories = model.update_memory(pixels, video_frame_mask=mask)
    assert [m.frames_seen for m in memories] == [5, 9]
    alone = model.update_memory(video[None])
    torch.testing.assert_close(memories[0].state.temporal, alone.state.temporal)
    # padding on the left, as transformers' pipelines pad, selects the same frames
    left = torch.zeros_like(pixels[:1])
    left[0, -5:] = video
    flipped_mask = torch.zeros(1, 9, dtype=torch.long)
    flipped_mask[0, -5:] = 1
    torch.testing.assert_close(
        model.update_memory(left, video_frame_mask=flipped_mask).state.temporal, alone.state.temporal
    )


def test_a_text_only_sample_next_to_a_video_answers_as_alone(model, processor, frames):
    video = frames(7)[0]
    with_video = prompt_inputs(processor, processor.num_video_tokens(7), "what moved?")
    chat = [{"role": "user", "content": [{"type": "text", "text": "say something"}]}]
    text_only = processor(text=processor.apply_chat_template(chat, add_generation_prompt=True), return_tensors="pt")
    pixels, mask = padded_videos([video, None], model.config.vision_config.image_size)
    batch = left_padded(processor, [with_video, text_only])
    out = model(**batch, pixel_values_videos=pixels, video_frame_mask=mask)
    assert out.video_memory[1] is None and out.video_memory[0].frames_seen == 7
    together = model.generate(
        **batch, pixel_values_videos=pixels, video_frame_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False
    )
    answers = together[:, batch["input_ids"].shape[1] :].tolist()
    assert answers == [answer_alone(model, with_video, video), answer_alone(model, text_only, None)]


def test_placeholders_for_a_sample_without_video_are_refused(model, processor, frames):
    pixels, mask = padded_videos([frames(3)[0], None], model.config.vision_config.image_size)
    prompt = prompt_inputs(processor, processor.num_video_tokens(3))
    batch = left_padded(processor, [prompt, prompt])
    with pytest.raises(ValueError, match="sample 1 has .* <video> placeholder tokens but its video memory gives 0"):
        model(**batch, pixel_values_videos=pixels, video_frame_mask=mask)


def test_ragged_frames_cannot_extend_one_existing_memory(model, frames):
    memory = model.update_memory(frames(3, batch=2))
    pixels, mask = padded_videos([frames(2)[0], frames(4)[0]], model.config.vision_config.image_size)
    with pytest.raises(ValueError, match="videos of different lengths, which can only start new memories"):
        model.update_memory(pixels, memory, video_frame_mask=mask)
    with pytest.raises(ValueError, match=r"video_frame_mask must be \[batch, frames\]"):
        model.update_memory(pixels, video_frame_mask=mask[:, :2])


@pytest.mark.parametrize(
    "seconds",
    [(3, 30), (20, 30)],  # at 20 and 30 frames the tiny memory has the same token count: padding would go unseen
    ids=["different-token-counts", "same-token-count"],
)
def test_pipeline_batch_of_two_videos_of_different_lengths_answers_as_one_at_a_time(
    model, processor, tmp_path, seconds
):
    """transformers' pipeline pads `pixel_values_videos` with black frames along the frame axis (on the tokenizer's
    padding side) and pads `video_frame_mask` the same way, so the mask tells the model which frames are real."""
    assert processor.num_video_tokens(20) == processor.num_video_tokens(30)
    short, long = (write_synthetic_video(tmp_path / f"{s}s.mp4", num_frames=10 * s, fps=10.0) for s in seconds)
    chats = [
        [{"role": "user", "content": [{"type": "video", "path": path}, {"type": "text", "text": "What moved?"}]}]
        for path in (short, long)
    ]
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    settings = {"return_full_text": False, "generate_kwargs": {"do_sample": False, "max_new_tokens": NEW_TOKENS}}
    together = pipe(chats, batch_size=2, **settings)
    alone = [pipe(chat, **settings) for chat in chats]
    assert [out[0]["generated_text"] for out in together] == [out[0]["generated_text"] for out in alone]
