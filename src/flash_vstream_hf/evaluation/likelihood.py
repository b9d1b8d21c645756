"""Multiple choice by likelihood: the log-probability of each option's text as the answer to the question, given
the memory.

For each option, one forward over `prompt + " " + option` with the same memory snapshot; the score is the sum
of the log-probabilities of the option's tokens (those after the prompt's). The prompt is the question alone
(in the chat template, with the video), not the lettered list: an option's score then does not depend on where
it is listed, so there is no position bias to collapse onto, and permuting the options permutes the scores.
The end-of-answer token is not scored (an option is scored as the start of an answer, not as all of it).
"""

from __future__ import annotations

import torch

from ..streaming import StreamSnapshot


def _prompt_text(processor, question: str) -> str:
    chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(chat, add_generation_prompt=True)


def _common_prefix(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


@torch.no_grad()
def option_logprobs(model, processor, question: str, options: tuple[str, ...], snapshot: StreamSnapshot) -> list[float]:
    """Sum of the log-probabilities of each option's tokens after the question's prompt, from `snapshot`."""
    tokens = snapshot.memory.get_seq_length()
    prompt = _prompt_text(processor, question)
    prompt_ids = processor(text=prompt, num_video_tokens=tokens)["input_ids"][0]
    scores = []
    for option in options:
        inputs = processor(text=f"{prompt} {option}", num_video_tokens=tokens, return_tensors="pt").to(model.device)
        ids = inputs["input_ids"][0]
        # The option's tokens are those after the prompt's. Should the tokenizer merge across the boundary, the
        # tokens from the first difference on are scored (a piece of the prompt's end with the option).
        start = min(_common_prefix(list(prompt_ids), ids.tolist()), len(ids) - 1)
        keep = len(ids) - start + 1  # logits at positions start-1 .. end predict the tokens start .. end
        output = model(**inputs, video_memory=snapshot.memory.snapshot(), logits_to_keep=keep)
        logits = output.logits[0, :-1].float()
        targets = ids[start:].to(logits.device)
        scores.append(float(torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum()))
    return scores
