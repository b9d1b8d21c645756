"""Flash-VStream v2 stream memory: the two modes side by side, on a tiny random model (CPU, seconds).

    python -m flash_vstream_hf.benchmarks.qwen2vl_memory [--frames 100 1000] [--rss 1000 10000] [--agreement]

- per stream length: memory tokens, memory bytes and the per-frame ingest cost (memory update only, features
  precomputed) of `bounded` and `faithful` mode, beside v1's tiny model (`FlashVStreamMemory`);
- `--rss A B`: process RSS after A and after B frames of a bounded stream (it must stay flat);
- `--agreement`: greedy tokens and first-token logits of the two modes on synthetic scene streams of 40-200 frames
  (a tiny random model: the figure says how far the memories' read-outs differ, not how well either answers).

The tiny model keeps Qwen2-VL's patching (14 px, temporal patch 2, merge 2) with K = 6 CSM clusters and S = 3 DAM
patches on 56x56 frames (a 4x4 patch grid): 3 x 4 + 6 x 1 = 18 memory tokens once full.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from ..qwen2vl.modeling_flash_vstream_qwen2vl import (
    FlashVStreamQwen2VLForConditionalGeneration,
    FlashVStreamQwen2VLFrameFeatures,
)
from ..tiny.qwen2vl import END, START, VIDEO, tiny_qwen2vl_config

K, S = 6, 3


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


def random_features(frames: int, seed: int = 0, dim: int = 32) -> FlashVStreamQwen2VLFrameFeatures:
    g = torch.Generator().manual_seed(seed)
    return FlashVStreamQwen2VLFrameFeatures(
        torch.randn(1, frames, 16, dim, generator=g), torch.randn(1, frames, 4, dim, generator=g), (4, 4)
    )


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_figures(model, lengths: list[int]) -> list[dict]:
    """Tokens, bytes and per-frame update cost of each mode (and v1's tiny model) after each stream length."""
    rows = []
    for mode in ("bounded", "faithful"):
        for frames in lengths:
            memory, features = model.new_memory(streaming_mode=mode), random_features(frames, seed=frames)
            began = time.perf_counter()
            model.update_memory_from_features(features, memory)
            cost = (time.perf_counter() - began) / frames
            rows.append({"model": f"v2 {mode}", "frames": frames, "tokens": memory.get_seq_length(),
                         "bytes": memory.nbytes, "ms_per_frame": 1e3 * cost})  # fmt: skip
    rows.extend(_v1_figures(lengths))
    return rows


def _v1_figures(lengths: list[int]) -> list[dict]:
    """v1's tiny model (`flash_vstream_hf.tiny`), the same measurement."""
    from ..tiny.model import tiny_model as v1_tiny_model

    model = v1_tiny_model().eval()
    rows = []
    for frames in lengths:
        size = model.config.vision_config.hidden_size
        features = torch.randn(1, frames, model.model.star_layout.spatial_tokens, size)
        began = time.perf_counter()
        memory = model.update_memory_from_features(features)
        cost = (time.perf_counter() - began) / frames
        rows.append({"model": "v1 tiny", "frames": frames, "tokens": memory.get_seq_length(),
                     "bytes": memory.nbytes, "ms_per_frame": 1e3 * cost})  # fmt: skip
    return rows


def bounded_rss(model, first: int, second: int) -> tuple[float, float]:
    """RSS (MB) after `first` and after `second` frames of one bounded stream (features precomputed per chunk)."""
    memory, done, readings = model.new_memory(streaming_mode="bounded"), 0, []
    for target in (first, second):
        while done < target:
            chunk = min(500, target - done)
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rss", type=int, nargs=2, default=None, metavar=("FIRST", "SECOND"))
    parser.add_argument("--agreement", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = tiny_model()
    print("| model | frames | memory tokens | memory bytes | ms / frame (update) |")
    print("|---|---:|---:|---:|---:|")
    for row in memory_figures(model, args.frames):
        print(f"| {row['model']} | {row['frames']} | {row['tokens']} | {row['bytes']} | {row['ms_per_frame']:.2f} |")
    if args.rss:
        first, second = bounded_rss(model, *args.rss)
        print(f"bounded RSS: {first:.1f} MB after {args.rss[0]} frames, {second:.1f} MB after {args.rss[1]} frames")
    if args.agreement:
        for name, value in mode_agreement(model).items():
            print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
