"""The learned part of the STAR memory: the semantic attention of the abstract-memory update (paper Alg. 2).

Kept apart from `modeling_flash_vstream.py` on purpose: transformers decides whether a model can switch its
attention implementation (`set_attn_implementation`) by scanning the model's source file for attention modules
that do not dispatch through `ALL_ATTENTION_FUNCTIONS`. This module is not a text attention layer (it scores
memory entries against frames and has no implementation to choose), so it must not make that scan fail.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_flash_vstream import FlashVStreamConfig
from .device_flash_vstream import execution_device, floating_dtype


class FlashVStreamAbstractMemoryAttention(nn.Module):
    """Semantic attention of the abstract-memory update (`attention_model` in the original code).

    Only the query and key projections take part in the update: the original's value/output projections and
    layer norm are never used at inference and are not kept.
    """

    def __init__(self, config: FlashVStreamConfig):
        super().__init__()
        self.hidden_size = config.abstract_hidden_size
        self.q_proj = nn.Linear(config.vision_config.hidden_size, self.hidden_size)
        self.k_proj = nn.Linear(config.vision_config.hidden_size, self.hidden_size)

    def forward(self, memory: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Attention weights `softmax(q(M) k(X)^T / sqrt(h))`: `[B, M, D] x [B, X, D] -> [B, M, X]` float32,
        on the device of `memory` (the module itself may sit on another device under a `device_map`)."""
        dtype = floating_dtype(self, memory.dtype)
        device = execution_device(self)
        query = self.q_proj(memory.to(device, dtype)).float()  # scores in float32: fp16 q.k can overflow
        key = self.k_proj(frames.to(device, dtype)).float()
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.hidden_size)
        return scores.softmax(dim=-1).to(memory.device)
