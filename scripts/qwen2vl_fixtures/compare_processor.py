"""How far this port's v2 processor is from the original's, from the same uint8 frames, at real frame sizes.

Two steps, two interpreters (the original needs transformers 4.45; see README.md beside this file):

    /work/v45/bin/python scripts/qwen2vl_fixtures/compare_processor.py original --sizes real \
        --original /work/v2-original/Flash-VStream-Qwen --out /tmp/original_pixels.safetensors
    .venv/bin/python scripts/qwen2vl_fixtures/compare_processor.py port --given /tmp/original_pixels.safetensors

The first writes the frames and the original's `pixel_values_videos` and `video_grid_thw` per size; the second
runs this port's processor on the same frames and prints a markdown table of the differences. `--sizes fixture
--out tests/fixtures/qwen2vl/processor_sizes.safetensors` writes the small committed fixture that
tests/test_qwen2vl_parity.py compares with.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

# Qwen2-VL-7B-Instruct's preprocessor_config.json, as the original loads it (make_fixtures.py uses the same).
PROCESSOR_KWARGS = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                    "merge_size": 2}  # fmt: skip
# (name, height, width), resized to the nearest 56-px multiples (the original refuses sides under 56 px). The
# fixture's shapes round to other sizes on Qwen2-VL's own 28-px grid (60x90 -> 56x84, 130x75 -> 140x84).
SIZES = {
    "fixture": [("60x90", 60, 90), ("130x75", 130, 75)],
    "real": [("60x90", 60, 90), ("448x448", 448, 448), ("VGA 480x640", 480, 640), ("HD 720x1280", 720, 1280)],
}
FRAMES = 2


def frames(height: int, width: int, seed: int) -> np.ndarray:
    """`[FRAMES, H, W, 3]` uint8: a smooth gradient scene with noise, like a camera frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], axis=-1)
    noisy = base[None] + rng.normal(0, 20, (FRAMES, height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def run_original(args: argparse.Namespace) -> None:
    sys.path.insert(0, os.path.abspath(args.original))
    from models.vstream_qwen2vl_processor import FlashVStreamQwen2VLImageProcessor

    processor = FlashVStreamQwen2VLImageProcessor(**PROCESSOR_KWARGS)
    tensors = {}
    for index, (name, height, width) in enumerate(SIZES[args.sizes]):
        video = frames(height, width, seed=index)
        out = processor(images=None, videos=[list(video)], return_tensors="pt", additional_pool_size=2)
        tensors[f"{name}/frames"] = torch.from_numpy(video)
        tensors[f"{name}/pixel_values_videos"] = out["pixel_values_videos"].contiguous()
        tensors[f"{name}/video_grid_thw"] = out["video_grid_thw"].contiguous()
    import PIL

    save_file(tensors, args.out, metadata={"pillow": PIL.__version__})
    print(f"wrote {len(SIZES[args.sizes])} sizes to {args.out} (Pillow {PIL.__version__})")


def run_port(args: argparse.Namespace) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from flash_vstream_hf.qwen2vl import FlashVStreamQwen2VLProcessor
    from flash_vstream_hf.tiny.qwen2vl import tiny_qwen2vl_tokenizer

    given = load_file(args.given)
    processor = FlashVStreamQwen2VLProcessor(Qwen2VLImageProcessorPil(**PROCESSOR_KWARGS), tiny_qwen2vl_tokenizer())
    print("| frames | grid (port / original) | values | max abs. difference | mean abs. difference | in 1/255 steps |")
    print("|---|---|---:|---:|---:|---:|")
    for name in sorted({key.rpartition("/")[0] for key in given}):
        video = given[f"{name}/frames"].numpy()
        out = processor(text="<|vision_start|><|video_pad|><|vision_end|>", videos=video, return_tensors="pt")
        ours, theirs = out["pixel_values_videos"], given[f"{name}/pixel_values_videos"]
        grid, their_grid = out["video_grid_thw"].tolist()[0], given[f"{name}/video_grid_thw"].tolist()[0]
        if ours.shape != theirs.shape:
            print(f"| {name} | {grid} / {their_grid} | shapes differ | | | |")
            continue
        difference = (ours - theirs).abs()
        # one 1/255 step of a pixel is 1 / (255 * std) after normalisation; the smallest CLIP std is 0.2613
        step = 1 / (255 * 0.26130258)
        print(f"| {name} | {grid} / {their_grid} | {ours.numel():,} | {difference.max().item():.3g} | "
              f"{difference.mean().item():.3g} | {difference.max().item() / step:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    original = steps.add_parser("original", help="run the original's image processor (transformers 4.45)")
    original.add_argument("--original", required=True, help="path of the original's Flash-VStream-Qwen folder")
    original.add_argument("--out", required=True, help="safetensors file to write")
    original.add_argument("--sizes", choices=sorted(SIZES), default="real")
    port = steps.add_parser("port", help="run this port's processor on the same frames and compare")
    port.add_argument("--given", required=True, help="the file the original step wrote")
    args = parser.parse_args()
    run_original(args) if args.step == "original" else run_port(args)


if __name__ == "__main__":
    main()
