"""How the original Flash-VStream layout maps onto this project's: state-dict keys and config fields.

Keys (docs/original_model.md, "Checkpoint keys"). Every original key matches exactly one rule: it is renamed, or
dropped for a stated reason; a key no rule knows is an error, so nothing is lost or invented silently.

Config (docs/original_model.md, "Config fields"). The original reads its memory fields with
`getattr(config, name, default)`; the same defaults are used here, so a config.json that omits a field converts
to what the original would have run.
Settings this port does not implement raise a `ValueError` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..modeling import FlashVStreamConfig

VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."

# The original's key length for retrieval is hard-coded (`key_length = 3`), as are the k-means iterations and
# tolerance (docs/original_model.md, "Retrieval", "Temporal memory"); they are not config fields there.
RETRIEVED_LENGTH = 3
KMEANS_MAX_ITER = 10
KMEANS_TOL = 1e-4

# Llama fields copied from the original config (a `LlamaConfig` subclass saved by transformers 4.31).
LLAMA_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
    "rms_norm_eps", "pretraining_tp", "attention_bias", "attention_dropout", "mlp_bias", "rope_theta",
    "rope_scaling", "bos_token_id", "eos_token_id", "pad_token_id", "use_cache",
)  # fmt: skip


@dataclass(frozen=True)
class KeyRule:
    pattern: str  # regex on the original key
    target: str | None  # `re.sub` replacement; None drops the key
    reason: str = ""  # why a key is dropped

    def apply(self, key: str) -> str | None:
        return re.sub(self.pattern, self.target, key) if self.target is not None else None


DROP_ROTARY = KeyRule(r"\.rotary_emb\.inv_freq$", None, "rotary inv_freq buffer; recomputed from the config")
DROP_CLIP_POSITION_IDS = KeyRule(
    r"^model\.vision_tower\.vision_tower\.vision_model\.embeddings\.position_ids$",
    None,
    "CLIP position_ids buffer; recomputed",
)
DROP_DEAD_ATTENTION = KeyRule(
    r"^model\.attention_model\.(v_proj|out_proj|out_ln)\.",
    None,
    "unused by the original at inference: the abstract-memory update reads only q_proj/k_proj "
    "(NeuralTuringMachine.forward is never called; bug B7 in docs/original_model.md)",
)
DROP_EMBEDDED_CLIP = KeyRule(
    r"^model\.vision_tower\.vision_tower\.",
    None,
    "embedded CLIP copy; the original loader ignores it too and loads CLIP from mm_vision_tower "
    "(docs/original_model.md, 'Checkpoint keys'), "
    "here from --vision-tower",
)
RENAMES = (
    KeyRule(r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
    KeyRule(r"^lm_head\.weight$", "lm_head.weight"),
    KeyRule(r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    KeyRule(r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    KeyRule(r"^model\.attention_model\.(q_proj|k_proj)\.", r"model.abstract_memory_attention.\1."),
)
EMBEDDED_CLIP = KeyRule(r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower.")


@dataclass
class KeyPlan:
    """Where every original key goes: `renamed[original] = new`, `dropped[original] = reason`."""

    renamed: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    def dropped_by_reason(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for key, reason in self.dropped.items():
            grouped.setdefault(reason, []).append(key)
        return grouped


def plan_keys(keys: list[str], vision_from_checkpoint: bool) -> KeyPlan:
    """Map every original key, or raise a `ValueError` listing the keys no rule knows.

    Args:
        keys: the original state-dict keys.
        vision_from_checkpoint: take CLIP from the copy embedded in the checkpoint (else it is dropped).
    """
    drops = [DROP_ROTARY, DROP_CLIP_POSITION_IDS, DROP_DEAD_ATTENTION]
    renames = list(RENAMES)
    if vision_from_checkpoint:
        renames.append(EMBEDDED_CLIP)
    else:
        drops.append(DROP_EMBEDDED_CLIP)
    plan, unknown = KeyPlan(), []
    for key in keys:
        rule = next((r for r in (*drops, *renames) if re.search(r.pattern, key)), None)
        if rule is None:
            unknown.append(key)
        elif rule.target is None:
            plan.dropped[key] = rule.reason
        else:
            plan.renamed[key] = rule.apply(key)
    if unknown:
        raise ValueError(f"{len(unknown)} checkpoint keys match no conversion rule (unexpected keys): {unknown[:20]}")
    if vision_from_checkpoint and not any(k.startswith(VISION_PREFIX) for k in keys):
        raise ValueError(
            f"the checkpoint holds no embedded CLIP weights ({VISION_PREFIX}*); pass --vision-tower instead"
        )
    return plan


# Settings this port implements: (field, the original's default, accepted?, what the release uses).
SUPPORTED_SETTINGS = (
    ("mm_use_4_vision_tokens", False, lambda v: not v, "false"),
    ("video_sample_type", "center", lambda v: v == "weighted_kmeans", "'weighted_kmeans'"),
    ("compress_type", None, lambda v: isinstance(v, str) and "mean" in v, "'mean'"),
    ("mm_vision_select_feature", "patch", lambda v: v == "patch", "'patch'"),
    ("mm_projector_type", "linear", lambda v: v == "mlp2x_gelu", "'mlp2x_gelu'"),
    ("mm_use_im_start_end", False, lambda v: not v, "false"),
)


def check_supported(original: dict) -> None:
    """Raise a `ValueError` naming the first original setting this port does not implement."""
    if original.get("model_type") != "vstream":
        raise ValueError(
            f"config.json model_type must be 'vstream' (Flash-VStream v1), got {original.get('model_type')!r}"
        )
    for name, default, accepted, released in SUPPORTED_SETTINGS:
        value = original.get(name, default)
        if not accepted(value):
            raise ValueError(
                f"config.json {name}={value!r} is not supported by this port (the released checkpoint uses {released})"
            )
    if "mm_vision_select_layer" not in original:
        raise ValueError("config.json has no mm_vision_select_layer (the vision hidden state the original uses)")


def text_config_dict(original: dict, vocab_size: int) -> dict:
    """The Llama config of the original, with the vocabulary grown to `vocab_size`."""
    text = {name: original[name] for name in LLAMA_FIELDS if name in original and original[name] is not None}
    text.update(model_type="llama", vocab_size=vocab_size, tie_word_embeddings=False)
    return text


def build_config(
    original: dict,
    vision_config: dict,
    abstract_hidden_size: int,
    vocab_size: int,
    video_token_id: int,
    dtype: torch.dtype,
) -> FlashVStreamConfig:
    """The `FlashVStreamConfig` of a converted checkpoint (`retrieval_mode="original"`, bug B1 in
    docs/original_model.md).

    Args:
        original: the original config.json.
        vision_config: the CLIP vision config (a `CLIPVisionConfig` dict).
        abstract_hidden_size: q/k size of the abstract-memory attention, read from `q_proj.weight` (the original
            never writes `compress_Turing_hidden_dim` to config.json).
        vocab_size: the grown vocabulary (a multiple of 64).
        video_token_id: id of the `<video>` placeholder.
    """
    check_supported(original)
    mm_hidden_size = original.get("mm_hidden_size")
    if mm_hidden_size is not None and mm_hidden_size != vision_config["hidden_size"]:
        raise ValueError(
            f"config.json mm_hidden_size={mm_hidden_size} does not match the vision tower's hidden_size "
            f"{vision_config['hidden_size']}; is --vision-tower the CLIP this checkpoint was trained with?"
        )
    config = FlashVStreamConfig(
        vision_config={**vision_config, "model_type": "clip_vision_model"},
        text_config=text_config_dict(original, vocab_size),
        video_token_id=video_token_id,
        vision_feature_layer=original["mm_vision_select_layer"],
        projector_hidden_act="gelu",  # mlp2x_gelu: nn.GELU(), the exact erf form
        spatial_pool_size=original.get("compress_size", 1),
        temporal_pool_size=original.get("compress_long_memory_size", 1),
        abstract_pool_size=original.get("compress_Turing_memory_size", 1),
        spatial_length=original.get("video_current_memory_length", 1),
        temporal_length=original.get("video_long_memory_length", 10),
        abstract_length=original.get("video_Turing_memory_length", 10),
        retrieved_length=RETRIEVED_LENGTH,
        abstract_update_ratio=original.get("compress_Turing_update_ratio", 0.2),
        abstract_hidden_size=abstract_hidden_size,
        kmeans_max_iter=KMEANS_MAX_ITER,
        kmeans_tol=KMEANS_TOL,
        retrieval_mode="original",
    )
    config.architectures = ["FlashVStreamForConditionalGeneration"]
    config.dtype = dtype
    return config
