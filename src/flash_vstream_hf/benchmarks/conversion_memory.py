"""Peak memory of `flash-vstream convert` on a checkpoint shaped like the released Flash-VStream-7b.

Writes a checkpoint in the original layout with random bf16 weights and the released shapes and sharding
(docs/original_model.md, "Checkpoint keys": Vicuna-7B + CLIP ViT-L/14 + projector + memory attention, 14.1 GB in
two `pytorch_model-*.bin` shards of at most 10 GB, as transformers 4.31 saved it), converts it with the real command in a subprocess (CLIP from
the embedded copy, since nothing may be downloaded), and prints the converter's peak resident memory, sampled
every 50 ms from /proc and taken from `getrusage` at exit.

    python -m flash_vstream_hf.benchmarks.conversion_memory                 # full 7B shapes: ~42 GB of disk, a few minutes
    python -m flash_vstream_hf.benchmarks.conversion_memory --layers 8      # a quarter of the Llama layers, for a quick look

Needs the package installed (`pip install -e .`). Writing the checkpoint keeps this script's own memory small:
tensors are filled in file-backed buffers, not in RAM.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from flash_vstream_hf.conversion.mapping import VISION_PREFIX

GB = 1e9
SHARD_LIMIT = 10 * GB  # transformers 4.31's default max_shard_size, which split the release 9.98 + 4.15 GB


def original_shapes(layers: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Original keys in `VStreamLlamaForCausalLM.state_dict()` order with shapes and dtypes (docs/original_model.md,
    "Checkpoint keys")."""
    bf16 = torch.bfloat16
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {"model.embed_tokens.weight": ((32000, 4096), bf16)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{name}.weight"] = ((4096, 4096), bf16)
        shapes[p + "self_attn.rotary_emb.inv_freq"] = ((64,), torch.float32)
        shapes[p + "mlp.gate_proj.weight"] = ((11008, 4096), bf16)
        shapes[p + "mlp.up_proj.weight"] = ((11008, 4096), bf16)
        shapes[p + "mlp.down_proj.weight"] = ((4096, 11008), bf16)
        shapes[p + "input_layernorm.weight"] = ((4096,), bf16)
        shapes[p + "post_attention_layernorm.weight"] = ((4096,), bf16)
    shapes["model.norm.weight"] = ((4096,), bf16)
    c = VISION_PREFIX
    shapes[c + "embeddings.class_embedding"] = ((1024,), bf16)
    shapes[c + "embeddings.patch_embedding.weight"] = ((1024, 3, 14, 14), bf16)
    shapes[c + "embeddings.position_embedding.weight"] = ((257, 1024), bf16)
    shapes[c + "embeddings.position_ids"] = ((1, 257), torch.int64)
    shapes[c + "pre_layrnorm.weight"] = shapes[c + "pre_layrnorm.bias"] = ((1024,), bf16)
    for i in range(24):
        p = c + f"encoder.layers.{i}."
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[p + f"self_attn.{name}.weight"] = ((1024, 1024), bf16)
            shapes[p + f"self_attn.{name}.bias"] = ((1024,), bf16)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[p + f"{norm}.weight"] = shapes[p + f"{norm}.bias"] = ((1024,), bf16)
        shapes[p + "mlp.fc1.weight"], shapes[p + "mlp.fc1.bias"] = ((4096, 1024), bf16), ((4096,), bf16)
        shapes[p + "mlp.fc2.weight"], shapes[p + "mlp.fc2.bias"] = ((1024, 4096), bf16), ((1024,), bf16)
    shapes[c + "post_layernorm.weight"] = shapes[c + "post_layernorm.bias"] = ((1024,), bf16)
    shapes["model.mm_projector.0.weight"], shapes["model.mm_projector.0.bias"] = ((4096, 1024), bf16), ((4096,), bf16)
    shapes["model.mm_projector.2.weight"], shapes["model.mm_projector.2.bias"] = ((4096, 4096), bf16), ((4096,), bf16)
    a = "model.attention_model."
    for name in ("q_proj", "k_proj", "v_proj"):
        shapes[a + f"{name}.weight"], shapes[a + f"{name}.bias"] = ((32, 1024), bf16), ((32,), bf16)
    shapes[a + "out_proj.weight"], shapes[a + "out_proj.bias"] = ((1024, 32), bf16), ((1024,), bf16)
    shapes[a + "out_ln.weight"] = shapes[a + "out_ln.bias"] = ((1024,), bf16)
    shapes["lm_head.weight"] = ((32000, 4096), bf16)
    return shapes


def nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return torch.Size(shape).numel() * dtype.itemsize


def write_checkpoint(folder: Path, layers: int) -> list[int]:
    """The original layout with random weights; returns the shard sizes in bytes."""
    shapes = original_shapes(layers)
    shards, current, size = [], [], 0
    for key, (shape, dtype) in shapes.items():
        if current and size + nbytes(shape, dtype) > SHARD_LIMIT:
            shards.append(current)
            current, size = [], 0
        current.append(key)
        size += nbytes(shape, dtype)
    shards.append(current)
    noise = torch.randn(1 << 24, generator=torch.Generator().manual_seed(0))  # 16 M values, tiled into tensors
    weight_map, sizes = {}, []
    for index, keys in enumerate(shards, start=1):
        name = f"pytorch_model-{index:05d}-of-{len(shards):05d}.bin"
        scratch = Path(tempfile.mkdtemp(dir=folder))
        state = {}
        for i, key in enumerate(keys):
            shape, dtype = shapes[key]
            numel = torch.Size(shape).numel()
            # file-backed, so a 10 GB shard is written without holding 10 GB of RAM
            flat = torch.from_file(str(scratch / str(i)), shared=True, size=numel, dtype=dtype)
            for start in range(0, numel, noise.numel()):
                chunk = flat[start : start + noise.numel()]
                chunk.copy_(noise[: chunk.numel()].roll(start % 9973))
            state[key] = flat.view(shape)
        torch.save(state, folder / name)
        del state, flat
        shutil.rmtree(scratch)
        weight_map.update(dict.fromkeys(keys, name))
        sizes.append((folder / name).stat().st_size)
        print(f"  wrote {name}: {sizes[-1] / GB:.2f} GB", flush=True)
    index = {"metadata": {"total_size": sum(nbytes(*shapes[k]) for k in shapes)}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(released_config(layers)))
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "temperature": 0.9, "top_p": 0.6,
                  "max_length": 4096, "transformers_version": "4.31.0"}  # fmt: skip
    (folder / "generation_config.json").write_text(json.dumps(generation))
    write_tokenizer(folder)
    return sizes


def released_config(layers: int) -> dict:
    """The released config.json (docs/original_model.md, "Config fields"), with `layers` Llama layers."""
    return {
        "architectures": ["VStreamLlamaForCausalLM"], "model_type": "vstream", "torch_dtype": "bfloat16",
        "transformers_version": "4.31.0", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": layers, "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_scaling": None, "pretraining_tp": 1,
        "initializer_range": 0.02, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "use_cache": True, "mm_vision_tower": "openai/clip-vit-large-patch14",
        "mm_hidden_size": 1024, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_projector_type": "mlp2x_gelu", "mm_use_4_vision_tokens": False, "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "compress_type": "mean", "compress_size": 8, "compress_long_memory_size": 4,
        "compress_Turing_memory_size": 1, "compress_Turing_update_ratio": 0.2, "video_current_memory_length": 1,
        "video_long_memory_length": 25, "video_Turing_memory_length": 25, "video_short_memory_length": 10,
        "video_max_frames": 26, "video_sample_type": "weighted_kmeans", "image_aspect_ratio": "pad",
        "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right",
    }  # fmt: skip


def write_tokenizer(folder: Path) -> None:
    """A 32000-entry LLaMA-style tokenizer (specials, 256 byte tokens, filler pieces); only its size matters."""
    from tokenizers import Tokenizer, models

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab.update({f"▁w{i}": i for i in range(len(vocab), 32000)})
    Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True)).save(
        str(folder / "tokenizer.json")
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))  # fmt: skip


class StatusSampler(threading.Thread):
    """Max of /proc/PID/status memory fields, sampled while the process runs."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile")

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peaks = pid, interval, dict.fromkeys(self.FIELDS, 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
            except (FileNotFoundError, ProcessLookupError):
                return
            for line in lines:
                name, _, value = line.partition(":")
                if name in self.peaks:
                    self.peaks[name] = max(self.peaks[name], int(value.split()[0]) * 1024)
            time.sleep(self.interval)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32, help="Llama layers (32 = the full 7B)")
    parser.add_argument("--workdir", help="where to write (default: a new folder in the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fvs-conversion-"))
    original, converted = workdir / "original", workdir / "converted"
    original.mkdir(parents=True, exist_ok=False)
    try:
        print(f"writing an original-layout checkpoint with {args.layers} Llama layers to {original}", flush=True)
        started = time.time()
        shard_sizes = write_checkpoint(original, args.layers)
        print(f"  {sum(shard_sizes) / GB:.2f} GB in {time.time() - started:.0f} s", flush=True)

        command = [sys.executable, "-m", "flash_vstream_hf", "convert", "--input", str(original),
                   "--output", str(converted), "--vision-tower-from-checkpoint"]  # fmt: skip
        print("running:", " ".join(command[2:]), flush=True)
        started = time.time()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sampler = StatusSampler(process.pid)
        sampler.start()
        output, _ = process.communicate()
        sampler.done.set()
        seconds = time.time() - started
        peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if process.returncode:
            print(output)
            return process.returncode
        out_shards = sorted(converted.glob("*.safetensors"))
        print(f"\nconverted in {seconds:.0f} s into {len(out_shards)} shard(s) of "
              f"{', '.join(f'{p.stat().st_size / GB:.2f}' for p in out_shards)} GB")  # fmt: skip
        print(
            f"input: {sum(shard_sizes) / GB:.2f} GB in {len(shard_sizes)} .bin shard(s), largest {max(shard_sizes) / GB:.2f} GB"
        )
        print(f"peak RSS of the converter (getrusage): {peak_rss / GB:.2f} GB")
        print(f"  sampled peaks: RSS {sampler.peaks['VmRSS'] / GB:.2f} GB, anonymous {sampler.peaks['RssAnon'] / GB:.2f} GB, "
              f"file-backed (memory-mapped shard pages the kernel can drop) {sampler.peaks['RssFile'] / GB:.2f} GB")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
