"""Where the converted CLIP vision tower comes from (docs/original_model.md, "Checkpoint keys").

The original loader ignores the CLIP copy saved inside the checkpoint and loads `CLIPVisionModel` from
`mm_vision_tower` (a local folder or a Hub id; the openai fp32 weights). That is the default here too, so the
converted model computes what the original served. The embedded copy (the same frozen weights, rounded to
bf16 by the training run) can be used instead with `--vision-tower-from-checkpoint`.
"""

from __future__ import annotations

import math
import re

import torch

from .mapping import VISION_PREFIX

# OpenAI CLIP ViTs (B/32, B/16, L/14, L/14-336) all use 64-dim attention heads.
CLIP_HEAD_DIM = 64


def load_vision_tower(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """CLIP vision config (dict) and fp32 state dict (keys as in `CLIPVisionModel`, e.g. `embeddings.*`) from a
    local CLIP folder or Hub id, loaded with `CLIPVisionModel.from_pretrained` as the original loader does."""
    from transformers import CLIPVisionModel
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # a full CLIP checkpoint's text-model keys are unused here, as in the original
    try:
        model = CLIPVisionModel.from_pretrained(name, dtype=torch.float32)
    except OSError as error:
        raise RuntimeError(
            f"could not load the CLIP vision tower {name!r} ({error}). Pass a local CLIP folder with --vision-tower, "
            "or use --vision-tower-from-checkpoint to take the copy embedded in the checkpoint"
        ) from error
    finally:
        logging.set_verbosity(verbosity)
    return vision_config_dict(model.config), model.state_dict()


def load_vision_config(name: str) -> dict:
    """Only the CLIP vision config of a local folder or Hub id (a `CLIPConfig` or `CLIPVisionConfig`)."""
    from transformers import CLIPVisionConfig

    try:
        return vision_config_dict(CLIPVisionConfig.from_pretrained(name))
    except OSError as error:
        raise RuntimeError(f"could not read the CLIP vision config of {name!r} ({error})") from error


def vision_config_dict(config) -> dict:
    keep = (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
        "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout", "projection_dim",
        "initializer_range", "initializer_factor",
    )  # fmt: skip
    values = config.to_dict()
    return {name: values[name] for name in keep if name in values}


def vision_shape_keys(keys: list[str]) -> list[str]:
    """The embedded-CLIP keys whose shapes describe its architecture."""
    wanted = ["embeddings.class_embedding", "embeddings.patch_embedding.weight", "embeddings.position_embedding.weight",
              "encoder.layers.0.mlp.fc1.weight"]  # fmt: skip
    return [VISION_PREFIX + name for name in wanted if VISION_PREFIX + name in keys]


def vision_config_from_shapes(keys: list[str], shapes: dict[str, tuple[int, ...]]) -> dict:
    """The CLIP vision config of the copy embedded in the checkpoint, read from its tensor shapes.

    The head count is not visible in the weights: it is `hidden_size / 64`, as in every OpenAI CLIP ViT. Pass
    `--vision-tower` along with `--vision-tower-from-checkpoint` to take the config from a CLIP folder instead.
    """
    names = vision_shape_keys(keys)
    if len(names) < 4:
        raise ValueError(f"the embedded CLIP weights are incomplete: found only {names}")
    p = VISION_PREFIX
    hidden = shapes[p + "embeddings.class_embedding"][0]
    _, channels, patch, _ = shapes[p + "embeddings.patch_embedding.weight"]
    positions = shapes[p + "embeddings.position_embedding.weight"][0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ValueError(f"the embedded CLIP has {positions} positions, not 1 + a square patch grid")
    layers = {int(m.group(1)) for k in keys if (m := re.match(re.escape(p) + r"encoder\.layers\.(\d+)\.", k))}
    if hidden % CLIP_HEAD_DIM:
        raise ValueError(
            f"cannot infer the head count of the embedded CLIP (hidden size {hidden} is not a multiple of "
            f"{CLIP_HEAD_DIM}); pass --vision-tower for its config"
        )
    return {
        "hidden_size": hidden,
        "intermediate_size": shapes[p + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": len(layers),
        "num_attention_heads": hidden // CLIP_HEAD_DIM,
        "num_channels": channels,
        "image_size": grid * patch,
        "patch_size": patch,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }
