"""Real-size efficiency of Flash-VStream in fp16 and NF4: weights memory, peak GPU memory, time to first token after
1 / 100 / 1,000 / 10,000 frames, and ingest speed, on a ViT-L/14 + Vicuna-7B-shaped model with random weights.

    python -m flash_vstream_hf.benchmarks.real_size                       # real shapes on the GPU (about 15 GB of disk, temporary)
    python -m flash_vstream_hf.benchmarks.real_size --small --device cpu  # same pipeline, small widths, runs anywhere in seconds

Nothing is downloaded. The model is built on the meta device and materialised layer by layer directly in the
target dtype (no fp32 copy of 7B parameters), written once as an fp16 safetensors checkpoint, and every variant is
loaded from it the way a user loads the converted model: `from_pretrained(dtype=...)` for fp16 and
`from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"))` for NF4.

What is measured, per variant:
- weights: bytes of parameters and buffers, bitsandbytes' quantization state included (`weights_bytes`).
- peak GPU memory: `torch.cuda.max_memory_allocated()` (and `max_memory_reserved()`, closer to what nvidia-smi
  shows) while loading, and while streaming and answering; CUDA only.
- time to first token: `generate(max_new_tokens=1)` from a memory snapshot after N frames (memory read-out,
  projector, prefill of the memory tokens plus a 64-token prompt, one decode step), median of `--repeats`.
  The long streams are fed as random vision features through `update_memory_from_features` in chunks of
  `--chunk` frames, so reaching 10,000 frames does not cost 10,000 vision-tower passes; a memory fed a chunk at
  once equals one fed the same frames offline. Random features exercise the same k-means and abstract updates.
- ingest: frames per second through the vision tower and the memory, one 224 px frame per `update_memory` call
  (the real-time frame handler), and of the memory alone (features, chunks of `--chunk`).
Random weights mean the generated token is meaningless; only the cost is.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from torch import nn

from flash_vstream_hf import FlashVStreamConfig, FlashVStreamForConditionalGeneration
from flash_vstream_hf.benchmarks.report import markdown_table, write_json
from flash_vstream_hf.benchmarks.ttft import prompt_ids as text_ids

FRAME_COUNTS = (1, 100, 1_000, 10_000)
VARIANTS = ("fp16", "nf4")
PROMPT_TOKENS = 64  # system prompt + question + "ASSISTANT:" of a vicuna_v1 prompt, roughly
PAPER = "paper (A100, Table 1 / Fig. 2): 16.03 GB VRAM with 1,000 frames; answers under 1 s at 1 to 10^4 frames"


def real_config() -> FlashVStreamConfig:
    """Flash-VStream-7b: CLIP ViT-L/14 at 224 px, Vicuna-7B, the released 681-token STAR memory (the defaults)."""
    return FlashVStreamConfig()


def small_config() -> FlashVStreamConfig:
    """The released memory layout (16x16 patch grid, 681 tokens) on narrow, shallow towers; sizes are multiples
    of 64 so bitsandbytes 4-bit runs on CPU."""
    return FlashVStreamConfig(
        vision_config={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 64, "patch_size": 4},
        text_config={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 4, "vocab_size": 32064},
    )  # fmt: skip


def empty_model(config: FlashVStreamConfig) -> FlashVStreamForConditionalGeneration:
    """The model with its parameters on the meta device (no memory); buffers are real and small."""
    with init_empty_weights(include_buffers=False):
        return FlashVStreamForConditionalGeneration(config)


def computed_weights_bytes(config: FlashVStreamConfig, variant: str) -> int:
    """Weights memory from parameter counts, nothing materialised: 2 bytes per parameter in fp16; in nf4 the
    language model's linear weights take half a byte each plus one fp32 absmax per 64-weight block (bitsandbytes'
    layout without double quantization), everything else stays fp16."""
    model = empty_model(config)
    skip = model.quantization_skip_modules
    total = sum(b.numel() * b.element_size() for b in model.buffers())
    for name, module in model.named_modules():
        kept = any(name == s or name.startswith(s + ".") for s in skip)
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if variant == "nf4" and isinstance(module, nn.Linear) and parameter_name == "weight" and not kept:
                total += parameter.numel() // 2 + 4 * (-(-parameter.numel() // 64))
            else:
                total += 2 * parameter.numel()
    return total


def weights_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers, including the bitsandbytes quantization state (absmax, code book) that
    `get_memory_footprint()` leaves out."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        total += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            parts = state.as_dict(packed=True).values()
            total += sum(t.numel() * t.element_size() for t in parts if isinstance(t, torch.Tensor))
    return total


def write_random_checkpoint(config: FlashVStreamConfig, path: Path, device: torch.device, seed: int = 0) -> None:
    """Save a model with random weights in fp16 without ever holding it in fp32: parameters start on the meta
    device and each is materialised on `device` in fp16 and initialised there."""
    model = empty_model(config)
    generator = torch.Generator(device).manual_seed(seed)
    for name, parameter in list(model.named_parameters()):
        value = torch.empty(parameter.shape, dtype=torch.float16, device=device)
        if parameter.dim() >= 2 or name.endswith("class_embedding"):
            value.normal_(0.0, 0.02, generator=generator)
        elif "norm" in name and name.endswith("weight"):
            value.fill_(1.0)
        else:
            value.zero_()
        set_module_tensor_to_device(model, name, device, value=value, dtype=torch.float16, clear_cache=False)
    model.save_pretrained(path, max_shard_size="2GB")
    del model


def load_variant(path: Path, variant: str, device: torch.device) -> FlashVStreamForConditionalGeneration:
    """fp16: every weight in fp16. nf4: the language model's linear layers in NF4 (compute fp16), the rest fp16."""
    kwargs = {"dtype": torch.float16, "device_map": str(device)}
    if variant == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16
        )
    return FlashVStreamForConditionalGeneration.from_pretrained(path, **kwargs).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gigabytes(n: float) -> float:
    return n / 1e9


def prompt_ids(config: FlashVStreamConfig, num_video_tokens: int, device: torch.device) -> torch.Tensor:
    """`[1, PROMPT_TOKENS + num_video_tokens]`: BOS, text tokens, the `<video>` placeholders, more text."""
    before, after = text_ids(config, 40, PROMPT_TOKENS - 41)
    video = torch.full((num_video_tokens,), config.video_token_id)
    return torch.cat([before, video, after]).unsqueeze(0).to(device)


def time_first_token(model, memory, device: torch.device, repeats: int) -> float:
    """Median seconds from a memory snapshot to the first generated token."""
    snapshot = memory.snapshot()
    input_ids = prompt_ids(model.config, snapshot.get_seq_length(), device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), video_memory=snapshot,
                       max_new_tokens=1, do_sample=False)  # fmt: skip
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_features(config: FlashVStreamConfig, frames: int, device, generator) -> torch.Tensor:
    """`[1, frames, g*g, D]` vision features (CLS dropped), as the vision tower would hand them to the memory."""
    grid = config.patch_grid_size
    shape = (1, frames, grid * grid, config.vision_config.hidden_size)
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(torch.float16)


def measure_variant(path: Path, variant: str, config, device: torch.device, args) -> dict:
    gc.collect()  # the previous model (or the checkpoint writer's) must be gone before the peak is reset
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model = load_variant(path, variant, device)
    result = {
        "load_s": time.perf_counter() - start,
        "weights_gb": gigabytes(weights_bytes(model)),
        "weights_computed_gb": gigabytes(computed_weights_bytes(config, variant)),
    }
    if device.type == "cuda":
        result["allocated_after_load_gb"] = gigabytes(torch.cuda.memory_allocated(device))
        result["load_peak_allocated_gb"] = gigabytes(torch.cuda.max_memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)

    generator = torch.Generator(device).manual_seed(1)
    with torch.inference_mode():
        # warm-up (kernels, caches) on a throwaway memory, not timed
        warm = model.update_memory_from_features(random_features(config, 2, device, generator))
        time_first_token(model, warm, device, 1)

        memory, fed, feed_seconds, ttft = None, 0, 0.0, {}
        for target in sorted(args.frames):
            while fed < target:
                count = min(args.chunk, target - fed)
                features = random_features(config, count, device, generator)
                synchronize(device)
                start = time.perf_counter()
                memory = model.update_memory_from_features(features, memory)
                synchronize(device)
                feed_seconds += time.perf_counter() - start
                fed += count
            ttft[str(target)] = time_first_token(model, memory, device, args.repeats)
        result.update(
            ttft_s=ttft,
            memory_tokens=memory.get_seq_length(),
            memory_mb=memory.nbytes / 1e6,
            memory_only_fps=fed / feed_seconds,
        )

        size = config.vision_config.image_size
        pixels = torch.randn(1, args.ingest_frames + 2, 3, size, size, generator=generator, device=device)
        stream = model.update_memory(pixels[:, :2])  # warm-up frames
        synchronize(device)
        start = time.perf_counter()
        for index in range(2, pixels.shape[1]):
            stream = model.update_memory(pixels[:, index : index + 1], stream)
        synchronize(device)
        result["ingest_fps"] = args.ingest_frames / (time.perf_counter() - start)
    if device.type == "cuda":
        result["stream_peak_allocated_gb"] = gigabytes(torch.cuda.max_memory_allocated(device))
        result["stream_peak_reserved_gb"] = gigabytes(torch.cuda.max_memory_reserved(device))
    del model, memory, stream
    gc.collect()
    return result


def format_table(report: dict) -> str:
    frames = sorted(report["frames"])
    cuda = report["device"].startswith("cuda")
    header = ["variant", "weights GB (computed)", *(["peak GPU GB (load)", "peak GPU GB (stream+answer)"] if cuda else []),
              *(f"TTFT {n:,} fr (s)" for n in frames), "ingest fps", "memory-only fps"]  # fmt: skip
    rows = []
    for variant, r in report["variants"].items():
        row = [variant, f"{r['weights_gb']:.3g} ({r['weights_computed_gb']:.3g})"]
        if cuda:
            row += [f"{r['load_peak_allocated_gb']:.2f}", f"{r['stream_peak_allocated_gb']:.2f}"]
        row += [f"{r['ttft_s'][str(n)]:.3f}" for n in frames]
        row += [f"{r['ingest_fps']:.1f}", f"{r['memory_only_fps']:.0f}"]
        rows.append(row)
    return markdown_table(header, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--small", action="store_true", help="small widths (same memory layout), for CPU and tests")
    parser.add_argument("--computed-only", action="store_true",
                        help="only print the weights memory computed from parameter counts; builds nothing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--frames", nargs="+", type=int, default=list(FRAME_COUNTS),
                        help="measure time to first token after these many frames (default 1 100 1000 10000)")
    parser.add_argument("--chunk", type=int, default=100, help="frames of features per memory update (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="answers timed per point, the median is kept")
    parser.add_argument("--ingest-frames", type=int, default=32, help="frames timed through the vision tower")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="keep (or reuse) the random fp16 checkpoint here instead of a temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu (with --small for a quick run)", file=sys.stderr)
        return 2
    if min(args.frames) < 1 or args.chunk < 1 or args.repeats < 1 or args.ingest_frames < 1:
        print("--frames, --chunk, --repeats and --ingest-frames must be >= 1", file=sys.stderr)
        return 2
    config = small_config() if args.small else real_config()
    shape = "small" if args.small else "ViT-L/14 + Vicuna-7B"
    if args.computed_only:
        for variant in args.variants:
            print(f"{shape} {variant}: weights {gigabytes(computed_weights_bytes(config, variant)):.3g} GB (computed)")
        return 0
    report = {
        "shape": shape,
        "device": f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "frames": sorted(args.frames),
        "chunk": args.chunk,
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        path = args.checkpoint_dir or Path(scratch) / "checkpoint"
        if not (path / "config.json").is_file():
            print(f"writing a random fp16 checkpoint ({report['shape']}) to {path} ...", file=sys.stderr)
            write_random_checkpoint(config, path, device)
        for variant in args.variants:
            print(f"measuring {variant} ...", file=sys.stderr)
            report["variants"][variant] = measure_variant(path, variant, config, device, args)
    print(f"Flash-VStream real-size benchmark: {report['shape']}, random weights, {report['device']}, "
          f"torch {report['torch']}; long streams fed as features in chunks of {args.chunk} frames")  # fmt: skip
    print(format_table(report))
    print(PAPER)
    if args.json:
        write_json(report, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
