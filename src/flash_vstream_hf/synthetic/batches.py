"""Model inputs from the synthetic world: pixel values of frames and tokenised questions with their labels."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .questions import Question

# What CLIPImageProcessor does to a 32 px frame (the resize and centre crop are no-ops at the model's own size):
# rescale to [0, 1], normalise with the OpenAI CLIP mean and std. Done here in one numpy op for a whole batch,
# since the image processor handles frames one by one (tested to match it).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def pixel_values(frames: np.ndarray) -> torch.Tensor:
    """`[..., H, W, 3]` uint8 frames -> `[..., 3, H, W]` float32, as the demo processor preprocesses them."""
    normalised = (frames.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(normalised, -1, -3)))


@lru_cache(maxsize=4096)
def prompt_text(processor, question: str) -> str:
    """The chat prompt of `question` about the video memory, ending where the answer starts."""
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


def question_batch(
    processor, questions: list[Question], num_video_tokens: int, with_answers: bool
) -> dict[str, torch.Tensor]:
    """Tokenised prompts `input_ids` / `attention_mask` `[N, L]` (left-padded) for `questions`.

    With `with_answers`, each prompt is followed by its answer word and `</s>`, and `labels` `[N, L]` holds those
    two tokens (everything else `-100`): the loss is the answer's, not the question's.
    """
    texts = [prompt_text(processor, q.text) for q in questions]
    if with_answers:
        texts = [f"{text} {q.answer} {processor.tokenizer.eos_token}" for text, q in zip(texts, questions)]
    inputs = processor(text=texts, num_video_tokens=num_video_tokens, return_tensors="pt")
    batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    if with_answers:
        labels = torch.full_like(batch["input_ids"], -100)
        labels[:, -2:] = batch["input_ids"][:, -2:]  # left padding: every sequence ends with "answer </s>"
        batch["labels"] = labels
    return batch


def answer_words(processor, logits: torch.Tensor) -> list[str]:
    """The first generated word (greedy) from next-token logits `[N, V]`, `<video>` excluded as in generate()."""
    logits = logits.clone()
    logits[:, processor.video_token_id] = float("-inf")
    return processor.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
