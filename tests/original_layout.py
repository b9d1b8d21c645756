"""Tiny checkpoints in the original Flash-VStream layout, built on the spot for the conversion tests.

The model is assembled from the library classes the original uses (`LlamaForCausalLM`, `CLIPVisionModel`,
an `nn.Sequential` projector) plus a module with the original `NeuralTuringMachine`'s parameters, and saved under
the original key names as transformers 4.31 wrote them (docs/original_model.md, "Checkpoint keys"), rotary
`inv_freq` and CLIP `position_ids` buffers included. The config uses the original field names with the released
STAR values (P_spa 8, P_tem 4, P_abs 1, N_tem = N_abs = 25) on a 16x16 patch grid with tiny layer sizes. The
tokenizer is a sentencepiece model trained here with LLaMA's settings. Nothing here is imported by the package.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
CORPUS = [
    VICUNA_SYSTEM,
    "USER: What is happening in the video? ASSISTANT: A man is walking a dog along the river in 2024.",
    "Describe the scene in detail. What color is the car? It is red, and the sky is blue.",
    "How many people are there? Three people are sitting at a table, eating and talking.",
    "Ünïcödé text, 日本語, and emoji 🙂 appear sometimes; numbers like 3.14 and 42 too.",
]
SP_VOCAB_SIZE = 400
CLIP_VISION = {  # 64 px / patch 4 = 16x16 grid as in CLIP ViT-L/14 at 224 px; 64-dim heads as in OpenAI CLIP
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 64,
    "patch_size": 4,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "initializer_range": 0.2,  # larger than Llama's 0.02 so logits depend strongly on every input token
    "pretraining_tp": 1,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "use_cache": True,
}
NTM_HIDDEN = 16  # not the original's default 32: the converter must read it from q_proj.weight
ORIGINAL_GENERATION_CONFIG = {
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "temperature": 0.9,
    "top_p": 0.6,
    "max_length": 4096,
    "transformers_version": "4.31.0",
}


@lru_cache(maxsize=1)
def sentencepiece_model() -> bytes:
    """A BPE sentencepiece model trained with LLaMA's settings: byte fallback, digits split, dummy prefix, no
    whitespace normalisation, `<unk>`/`<s>`/`</s>` = 0/1/2, no pad. As in LLaMA, a newline has no piece of its
    own and falls back to the byte `<0x0A>` (the corpus has none)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=model,
        vocab_size=SP_VOCAB_SIZE,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return model.getvalue()


def sentencepiece_processor():
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=sentencepiece_model())


def write_tokenizer(folder: Path) -> None:
    """The tokenizer files of a LLaVA-era checkpoint: `tokenizer.model` and the slow LlamaTokenizer config."""
    (folder / "tokenizer.model").write_bytes(sentencepiece_model())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "model_max_length": 2048,
        "padding_side": "right", "clean_up_tokenization_spaces": False, "sp_model_kwargs": {},
    }))  # fmt: skip
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    )


class NeuralTuringMachineParameters(nn.Module):
    """The parameters of the original `NeuralTuringMachine` (only q_proj/k_proj are used at inference)."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.q_proj = nn.Linear(input_dim, hidden_dim)
        self.k_proj = nn.Linear(input_dim, hidden_dim)
        self.v_proj = nn.Linear(input_dim, hidden_dim)
        self.out_proj = nn.Linear(hidden_dim, input_dim)
        self.out_ln = nn.LayerNorm(input_dim, eps=1e-12)


@dataclass
class OriginalModel:
    """The original's modules: what `VStreamLlamaForCausalLM` holds after `from_pretrained`."""

    config: dict  # the original config.json
    llama: LlamaForCausalLM
    projector: nn.Sequential  # mm_projector: Linear, GELU, Linear
    attention_model: NeuralTuringMachineParameters
    embedded_clip: CLIPVisionModel  # the copy saved inside the checkpoint (the original loader ignores it)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All tensors under their original names, as `VStreamLlamaForCausalLM.save_pretrained` wrote them."""
        state = dict(self.llama.state_dict())
        head_dim = self.llama.config.hidden_size // self.llama.config.num_attention_heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        for layer in range(self.llama.config.num_hidden_layers):
            state[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
        state.update({f"model.mm_projector.{k}": v for k, v in self.projector.state_dict().items()})
        state.update({f"model.attention_model.{k}": v for k, v in self.attention_model.state_dict().items()})
        prefix = "model.vision_tower.vision_tower.vision_model."
        state.update({prefix + k: v for k, v in self.embedded_clip.state_dict().items()})
        positions = self.embedded_clip.config.image_size // self.embedded_clip.config.patch_size
        state[prefix + "embeddings.position_ids"] = torch.arange(positions**2 + 1)[None]
        return {k: v.detach().clone().contiguous() for k, v in state.items()}


def original_config(**overrides) -> dict:
    """config.json of the original layout (docs/original_model.md, "Config fields") for the tiny model, released
    STAR values."""
    config = {
        "_name_or_path": "./checkpoints-finetune/vstream-vicuna-7b-finetune-weighted_kmeans",
        "architectures": ["VStreamLlamaForCausalLM"],
        "model_type": "vstream",
        "torch_dtype": "float32",
        "transformers_version": "4.31.0",
        **LLAMA,
        "vocab_size": SP_VOCAB_SIZE,
        "mm_vision_tower": "openai/clip-vit-large-patch14",
        "mm_hidden_size": CLIP_VISION["hidden_size"],
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_4_vision_tokens": False,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_projector_lr": None,
        "mm_resampler_type": None,
        "use_mm_proj": True,
        "compress_type": "mean",
        "compress_size": 8,
        "compress_long_memory_size": 4,
        "compress_Turing_memory_size": 1,
        "compress_Turing_update_ratio": 0.2,
        "video_current_memory_length": 1,
        "video_long_memory_length": 25,
        "video_Turing_memory_length": 25,
        "video_short_memory_length": 10,
        "video_max_frames": 26,
        "video_sample_type": "weighted_kmeans",
        "image_aspect_ratio": "pad",
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
    }
    config.update(overrides)
    return config


def build_original_model(seed: int = 0, **config_overrides) -> OriginalModel:
    """Random weights in the original module tree."""
    torch.manual_seed(seed)
    config = original_config(**config_overrides)
    llama_fields = {k: v for k, v in LLAMA.items() if k != "rope_scaling"}  # a 4.31 field; None is the default
    llama = LlamaForCausalLM(LlamaConfig(**llama_fields, vocab_size=SP_VOCAB_SIZE)).eval()
    projector = nn.Sequential(
        nn.Linear(config["mm_hidden_size"], LLAMA["hidden_size"]),
        nn.GELU(),
        nn.Linear(LLAMA["hidden_size"], LLAMA["hidden_size"]),
    )
    attention_model = NeuralTuringMachineParameters(config["mm_hidden_size"], NTM_HIDDEN)
    with torch.no_grad():  # sharp attention, so the abstract memory depends on which frames match which rows
        for projection in (attention_model.q_proj, attention_model.k_proj):
            projection.weight.mul_(8.0)
    embedded_clip = CLIPVisionModel(CLIPVisionConfig(**CLIP_VISION)).eval()
    return OriginalModel(config, llama, projector, attention_model, embedded_clip)


def write_clip_folder(folder: Path, seed: int = 1) -> CLIPVisionModel:
    """A CLIP checkpoint like `openai/clip-vit-large-patch14` (full CLIPModel, vision and text), saved in
    `folder`; returns its vision model as `CLIPVisionModel.from_pretrained(folder)` loads it."""
    torch.manual_seed(seed)
    text = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 99, "max_position_embeddings": 16}  # fmt: skip
    CLIPModel(CLIPConfig(vision_config=CLIP_VISION, text_config=text, projection_dim=32)).save_pretrained(folder)
    return CLIPVisionModel.from_pretrained(folder).eval()


def write_checkpoint(
    model: OriginalModel, folder: Path, fmt: str = "bin", num_shards: int = 2, state: dict | None = None
) -> Path:
    """Save `model` in the original layout: `pytorch_model-0000i-of-0000n.bin` (or `model-...safetensors`) with
    its index, config.json, generation_config.json and the tokenizer files. `state` replaces the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state is None else state
    keys = list(state)
    stem, suffix, index = ("pytorch_model", "bin", "pytorch_model.bin.index.json") if fmt == "bin" else (
        "model", "safetensors", "model.safetensors.index.json")  # fmt: skip
    per_shard = -(-len(keys) // num_shards)
    weight_map = {}
    for i in range(num_shards):
        name = f"{stem}-{i + 1:05d}-of-{num_shards:05d}.{suffix}"
        shard = {k: state[k] for k in keys[i * per_shard : (i + 1) * per_shard]}
        if fmt == "bin":
            torch.save(shard, folder / name)
        else:
            save_file(shard, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    (folder / index).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(model.config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(ORIGINAL_GENERATION_CONFIG))
    write_tokenizer(folder)
    return folder
