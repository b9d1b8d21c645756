"""Flash-VStream v2 stream memory: the two modes side by side, beside v1, on random models (CPU).

    python -m flash_vstream_hf.benchmarks.qwen2vl_memory [--frames 100 1000 10000] [--rss 1000 100000]
        [--agreement] [--real [FRAMES ...]] [--real-side 112]

- per stream length (one stream per memory, streamed in chunks to each length in turn): memory tokens and bytes,
  the per-frame update cost of the next 4 frames (the memory update alone: features are precomputed random ones)
  and the time to first token (`generate(max_new_tokens=1)` from a snapshot: read-out, prefill, first token,
  median of 3) of `bounded` and `faithful` mode, beside v1's tiny model (`FlashVStreamMemory`);
- `--rss A B`: process RSS after A and after B frames of a bounded stream (it must stay flat);
- `--agreement`: greedy tokens and first-token logits of the two modes on synthetic scene streams of 40-200 frames
  (a tiny random model: the figure says how far the memories' read-outs differ, not how well either answers);
- `--real`: the same stream figures at Qwen2-VL-7B widths with 2 ViT blocks and 2 decoder layers, on
  `--real-side` frames, beside v1 at its released widths (as few layers), and v2's ViT cost per frame. TTFT
  there is mostly the 2 layers' prefill of the memory tokens; the released model has 28 layers, so its prefill
  is ~14x that, while the read-out stays the same.

The tiny model keeps Qwen2-VL's patching (14 px, temporal patch 2, merge 2) with K = 6 CSM clusters and S = 3 DAM
patches on 56x56 frames (a 4x4 patch grid): 3 x 4 + 6 x 1 = 18 memory tokens once full.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..qwen2vl.modeling_flash_vstream_qwen2vl import (
    FlashVStreamQwen2VLForConditionalGeneration,
    FlashVStreamQwen2VLFrameFeatures,
)
from ..tiny.qwen2vl import END, START, VIDEO, tiny_qwen2vl_config
from .report import markdown_table

K, S = 6, 3
BUILD_CHUNK = 500  # frames per update call while a memory is streamed to the next length


def tiny_model(seed: int = 0) -> FlashVStreamQwen2VLForConditionalGeneration:
    config = tiny_qwen2vl_config(K, S)
    torch.manual_seed(seed)
    return FlashVStreamQwen2VLForConditionalGeneration(config).eval()


def scene_stream(frames: int, seed: int, side: int = 56) -> torch.Tensor:
    """`[frames, 3, side, side]` normalised pixels: a few scenes (random images) of random lengths, each drifting
    slowly with per-frame noise, as a camera on a changing world."""
    g = torch.Generator().manual_seed(seed)
    scenes = int(torch.randint(3, 9, (1,), generator=g))
    cuts = torch.sort(torch.randperm(frames - 1, generator=g)[: scenes - 1] + 1).values.tolist()
    out, start = [], 0
    for end in [*cuts, frames]:
        base, drift = torch.randn(3, side, side, generator=g), torch.randn(3, side, side, generator=g)
        for step in range(end - start):
            out.append(base + 0.02 * step * drift + 0.1 * torch.randn(3, side, side, generator=g))
        start = end
    return torch.stack(out)


def random_features(
    frames: int, seed: int = 0, dim: int = 32, grid: tuple[int, int] = (4, 4)
) -> FlashVStreamQwen2VLFrameFeatures:
    """Random ViT features of `frames` frames: `[1, frames, h * w, dim]` full resolution, `[1, frames, h/2 * w/2,
    dim]` low resolution, for a `grid = (h, w)` patch grid."""
    g = torch.Generator().manual_seed(seed)
    (h, w), low = grid, (grid[0] // 2) * (grid[1] // 2)
    return FlashVStreamQwen2VLFrameFeatures(
        torch.randn(1, frames, h * w, dim, generator=g), torch.randn(1, frames, low, dim, generator=g), grid
    )


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Contender:
    """One stream memory being measured: `add(count, seed)` streams `count` random frames into it, `ttft()` runs
    one `generate(max_new_tokens=1)` from it (memory read-out, prefill and the first token)."""

    name: str
    memory: object
    add: Callable[[int, int], None]
    ttft: Callable[[], object]


def v2_contender(model, mode: str, grid: tuple[int, int], prompt: list[int]) -> Contender:
    dim, config = model.config.vision_config.embed_dim, model.config
    memory = model.new_memory(streaming_mode=mode, seed=0)

    def add(count: int, seed: int) -> None:
        model.update_memory_from_features(random_features(count, seed, dim, grid), memory)

    def ttft():
        ids = torch.tensor([[config.vision_start_token_id, *[config.video_token_id] * memory.get_seq_length(),
                             config.vision_end_token_id, *prompt]])  # fmt: skip
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_memory=memory.snapshot(),
                              max_new_tokens=1, do_sample=False)  # fmt: skip

    return Contender(f"v2 {mode}", memory, add, ttft)


def v1_contender(model, prompt: list[int], name: str = "v1 tiny") -> Contender:
    """A v1 model (`FlashVStreamMemory`), the same measurements."""
    layout, config = model.star_layout, model.config
    memory = model.new_memory(1)

    def add(count: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        features = torch.randn(1, count, layout.spatial_tokens, config.vision_config.hidden_size, generator=g)
        model.update_memory_from_features(features, memory)

    def ttft():
        ids = torch.tensor([[config.text_config.bos_token_id, *[config.video_token_id] * memory.get_seq_length(),
                             *prompt]])  # fmt: skip
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_memory=memory.snapshot(),
                              max_new_tokens=1, do_sample=False)  # fmt: skip

    return Contender(name, memory, add, ttft)


@torch.no_grad()
def stream_figures(contenders: list[Contender], lengths: list[int], step: int = 4, repeats: int = 3) -> list[dict]:
    """Each contender's memory streamed to each length in turn: memory tokens and bytes there, the per-frame
    update cost of the next `step` frames (features precomputed) and the median TTFT of `repeats` calls."""
    rows = []
    for contender in contenders:
        seen = 0
        for index, frames in enumerate(sorted(lengths)):
            while seen < frames:
                chunk = min(BUILD_CHUNK, frames - seen)
                contender.add(chunk, seen)
                seen += chunk
            if index == 0:
                contender.ttft()  # warm-up: the first call pays one-time allocation costs
            memory = contender.memory
            tokens, nbytes = memory.get_seq_length(), memory.nbytes
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                contender.ttft()
                times.append(time.perf_counter() - began)
            began = time.perf_counter()
            contender.add(step, seen)
            cost = (time.perf_counter() - began) / step
            seen += step
            rows.append({"model": contender.name, "frames": frames, "tokens": tokens, "bytes": nbytes,
                         "ms_per_frame": 1e3 * cost, "ttft_ms": 1e3 * statistics.median(times)})  # fmt: skip
    return rows


def memory_figures(model, lengths: list[int], repeats: int = 3) -> list[dict]:
    """`stream_figures` of both modes of the tiny v2 model and of v1's tiny model."""
    from ..tiny.model import tiny_model as v1_tiny_model

    prompt = [10, 11, 12, 13]
    contenders = [v2_contender(model, mode, (4, 4), prompt) for mode in ("bounded", "faithful")]
    contenders.append(v1_contender(v1_tiny_model().eval(), prompt))
    return stream_figures(contenders, lengths, repeats=repeats)


def real_width_config(vision_depth: int = 2, text_layers: int = 2):
    """Qwen2-VL-7B's widths (ViT 1280, merger and language model 3584, MLP 18944, 28 heads / 4 KV heads,
    vocabulary 152,064) with `vision_depth` of its 32 ViT blocks and `text_layers` of its 28 decoder layers; the
    released Flash Memory sizes (K = 60 CSM clusters, S = 30 DAM patches)."""
    from ..qwen2vl.configuration_flash_vstream_qwen2vl import FlashVStreamQwen2VLConfig

    return FlashVStreamQwen2VLConfig(
        vision_config={"depth": vision_depth},
        text_config={"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": text_layers,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                     "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}},
    )  # fmt: skip


def v1_real_width_model():
    """v1 at its released widths with as few layers as v2's real-width model: ViT-L/14 with 2 of its 24 layers,
    the released STAR layout, Vicuna-7B with 2 of its 32 decoder layers (random weights)."""
    import dataclasses

    from .models import bench_model
    from .sizes import FULL

    return bench_model(dataclasses.replace(FULL, vision_layers=2))


def real_width_figures(lengths: list[int], side: int, repeats: int = 1) -> dict:
    """Both modes at Qwen2-VL-7B widths (few layers, random weights) on `side`-pixel square frames, beside v1 at
    its released widths: the stream figures, plus v2's ViT cost per frame (both resolutions, one pass)."""
    torch.manual_seed(0)
    model = FlashVStreamQwen2VLForConditionalGeneration(real_width_config()).eval()
    grid = (side // 14, side // 14)
    pixels = torch.randn(1, 4, 3, side, side)
    with torch.no_grad():
        model.get_frame_features(pixels[:, :1])  # warm-up
        began = time.perf_counter()
        model.get_frame_features(pixels)
        vit_ms = 1e3 * (time.perf_counter() - began) / pixels.shape[1]
    prompt = list(range(1000, 1016))
    contenders = [v2_contender(model, mode, grid, prompt) for mode in ("bounded", "faithful")]
    contenders.append(v1_contender(v1_real_width_model(), prompt, name="v1 released"))
    return {"side": side, "grid": grid, "vit_ms_per_frame": vit_ms,
            "rows": stream_figures(contenders, lengths, repeats=repeats)}  # fmt: skip


def bounded_rss(model, first: int, second: int) -> tuple[float, float]:
    """RSS (MB) after `first` and after `second` frames of one bounded stream (features precomputed per chunk)."""
    memory, done, readings = model.new_memory(streaming_mode="bounded"), 0, []
    for target in (first, second):
        while done < target:
            chunk = min(BUILD_CHUNK, target - done)
            model.update_memory_from_features(random_features(chunk, seed=done), memory)
            done += chunk
        readings.append(rss_mb())
    return readings[0], readings[1]


@torch.no_grad()
def mode_agreement(model, lengths=(40, 80, 120, 160, 200), seeds=(0, 1), new_tokens: int = 8) -> dict:
    """Greedy tokens and first-token logits of the two modes on the same scene streams."""
    same_sequences, same_tokens, total_tokens, same_top1, diffs, scales = 0, 0, 0, 0, [], []
    cases = [(frames, seed) for frames in lengths for seed in seeds]
    for frames, seed in cases:
        features = model.get_frame_features(scene_stream(frames, seed)[None])
        outputs = {}
        for mode in ("bounded", "faithful"):
            memory = model.update_memory_from_features(features, model.new_memory(seed=seed, streaming_mode=mode))
            ids = torch.tensor([[START, *[VIDEO] * memory.get_seq_length(), END, 10, 11, 12]])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_memory=memory,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True)  # fmt: skip
            outputs[mode] = (out.sequences[0, ids.shape[1] :], out.logits[0][0])
        (a, la), (b, lb) = outputs["bounded"], outputs["faithful"]
        same_sequences += int(torch.equal(a, b))
        same_tokens += int((a == b).sum())
        total_tokens += a.numel()
        same_top1 += int(la.argmax() == lb.argmax())
        diffs.append(float((la - lb).abs().max()))
        scales.append(float(lb.std()))
    return {
        "streams": len(cases),
        "identical_answers": same_sequences,
        "token_agreement": same_tokens / total_tokens,
        "first_token_top1_agreement": same_top1 / len(cases),
        "max_first_logit_diff": max(diffs),
        "mean_first_logit_diff": sum(diffs) / len(diffs),
        "first_logit_std": sum(scales) / len(scales),
    }


def table(rows: list[dict]) -> str:
    headers = ["model", "frames", "memory tokens", "memory bytes", "ms / frame (update)", "TTFT ms"]
    return markdown_table(headers, [[r["model"], f"{r['frames']:,}", r["tokens"], f"{r['bytes']:,}",
                                     f"{r['ms_per_frame']:.2f}", f"{r['ttft_ms']:.1f}"] for r in rows])  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rss", type=int, nargs=2, default=None, metavar=("FIRST", "SECOND"))
    parser.add_argument("--agreement", action="store_true")
    parser.add_argument("--real", type=int, nargs="*", default=None, metavar="FRAMES",
                        help="also at Qwen2-VL-7B widths, at these stream lengths (default 100 1000)")
    parser.add_argument("--real-side", type=int, default=112, help="frame side at real widths (default 112 px)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"tiny widths (K = {K}, S = {S}, 56x56 frames), {args.threads} thread(s)\n")
    print(table(memory_figures(tiny_model(), args.frames)))
    if args.rss:
        first, second = bounded_rss(tiny_model(), *args.rss)
        print(f"\nbounded RSS: {first:.1f} MB after {args.rss[0]:,} frames, {second:.1f} MB after {args.rss[1]:,}")
    if args.agreement:
        print()
        for name, value in mode_agreement(tiny_model()).items():
            print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    if args.real is not None:
        real = real_width_figures(args.real or [100, 1000], args.real_side)
        print(f"\nQwen2-VL-7B widths, 2 of 32 ViT blocks, 2 of 28 decoder layers, random weights, "
              f"{args.real_side}x{args.real_side} frames ({real['grid'][0]}x{real['grid'][1]} patches); "
              f"ViT {real['vit_ms_per_frame']:.0f} ms / frame\n")
        print(table(real["rows"]))


if __name__ == "__main__":
    main()
