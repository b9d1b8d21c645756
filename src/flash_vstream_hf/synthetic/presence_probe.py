"""Presence probe: a training-only read-out that teaches the language model's first layer to look up a named
colour or shape in the memory.

Why: "did a red shape appear" needs the asked word matched against every memory token, and a "nothing matches"
outcome. The memory holds the answer: the largest cosine similarity between the projected temporal tokens and the
asked word's embedding separates yes from no with an AUC of 0.98 on held-out streams at 500 and 2,000 frames
(`readout.py`).
Yet from the answer loss alone the 2-layer language model stayed near chance for 4,000 steps: the gradient has to
find the matching attention through the last layer and the answer position.

The probe puts a loss where the look-up can happen in one step. At the position of the asked word, the first
layer's output can attend to every memory token (they all come before it), and causal attention hides the words
after it, so only "did a" before it says which question it is. A linear layer there predicts the yes/no answer of
the long-range presence questions (`KINDS`); its binary cross-entropy is added to the answer loss.

Measured in the fourth training stage of the checkpoint shipped before this one (1,500 steps from its third stage;
`flash-vstream demo --eval`): held-out long-range at 2,000 frames went from 47.8% to 87.9%, and "did a red shape
appear" from 46% to 97%. "Did a triangle appear" stayed at chance: the shape is barely in the temporal tokens
(max-cosine AUC 0.65).

The probe is not part of the saved model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

KINDS = ("long_colour", "long_shape")  # "did a red shape appear", "did a triangle appear"
LAYER = 1  # `hidden_states[1]`: the output of the language model's first layer


class PresenceProbe(nn.Module):
    """`[..., D_text]` hidden states -> `[...]` logits of the answer being "yes". Starts at zero (and draws no
    random numbers, so adding it leaves a seeded run's model initialisation as it was)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(hidden_size))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.weight + self.bias


def presence_probe_loss(
    probe: PresenceProbe,
    hidden_states: tuple[torch.Tensor, ...],
    input_ids: torch.Tensor,
    questions: list,
    word_ids: torch.Tensor,
) -> torch.Tensor | None:
    """Binary cross-entropy of the probe at the asked word of every `KINDS` question (`None` when there is none).

    `hidden_states` are the language model's, `[N, L, D]` each; `input_ids` `[N, L]`; `questions` the `N` rows'
    `Question`s; `word_ids` the token ids of the colour and shape words. The asked word is the last of them in the
    row (the answer after it is "yes" or "no", never a colour or shape)."""
    rows = [i for i, question in enumerate(questions) if question.kind in KINDS]
    if not rows:
        return None
    rows_t = torch.tensor(rows)
    is_word = torch.isin(input_ids[rows_t], word_ids)  # [R, L]
    positions = input_ids.shape[1] - 1 - is_word.flip(-1).int().argmax(-1)  # the last colour or shape word
    hidden = hidden_states[LAYER][rows_t, positions]  # [R, D]
    target = torch.tensor([questions[i].answer == "yes" for i in rows], dtype=hidden.dtype)
    return F.binary_cross_entropy_with_logits(probe(hidden), target)
