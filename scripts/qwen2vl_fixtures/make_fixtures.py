"""Parity fixtures for the Flash-VStream v2 (Qwen2-VL + Flash Memory) port, made by the ORIGINAL code.

The original (github.com/IVGSZ/Flash-VStream, folder ``Flash-VStream-Qwen/models/``) is imported from the
path given with ``--original`` and run on CPU under its own pins (transformers 4.45). Nothing from it is
copied here; this script only builds a tiny random checkpoint with the original's classes, saves it
with the original's ``save_pretrained`` and records what the original computes on a few inputs.

Re-run (a few seconds on one CPU thread; see README.md next to this file):

    python3 -m venv /work/v45
    /work/v45/bin/pip install torch==2.13.0 transformers==4.45.0 numpy pillow safetensors
    # the original, outside this repository (any clone of github.com/IVGSZ/Flash-VStream, commit
    # 6a82abf or later; models/ is unchanged up to 8f6bde2):
    mkdir -p /work/v2-original
    git -C <Flash-VStream clone> archive HEAD Flash-VStream-Qwen/models | tar -x -C /work/v2-original
    /work/v45/bin/python scripts/qwen2vl_fixtures/make_fixtures.py \
        --original /work/v2-original/Flash-VStream-Qwen --out tests/fixtures/qwen2vl

In ``--out`` the files this script writes are replaced (README.md and .gitignore stay). Every video
case is also rerun in float64 (``--no-check-fp64`` skips it) to record whether the memory's discrete
choices and the greedy tokens stay the same, so no fixture sits on a numerical knife edge. The frame
seed is 12 (env ``FIXTURE_FRAME_SEED`` overrides it, for exploring only). Output is bit-identical
between runs (one thread).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file

# ----------------------------------------------------------------------------------------------------
# Tiny configuration. Qwen2-VL's special tokens (151643 <|endoftext|>, 151644 <|im_start|>, 151645
# <|im_end|>, 151652..151656 vision start/end/pad, image pad, video pad) are moved to 500..507 of a
# 512-token vocabulary; ordinary text tokens are drawn from 0..499.
# ----------------------------------------------------------------------------------------------------
BOS = 500  # <|endoftext|>
IM_START = 501  # <|im_start|>
IM_END = 502  # <|im_end|> (eos)
VISION_START = 503  # <|vision_start|>
VISION_END = 504  # <|vision_end|>
VISION_TOKEN = 505  # <|vision_pad|>
IMAGE_TOKEN = 506  # <|image_pad|>
VIDEO_TOKEN = 507  # <|video_pad|>
VOCAB = 512
TEXT_VOCAB = 500

FLASH_MEMORY_CONFIG = {
    "flash_memory_temporal_length": 4,  # CSM budget: K = 2 clusters of temporal patches
    "flash_memory_temporal_method": "kmeans_ordered",
    "flash_memory_temporal_poolsize": 2,
    "flash_memory_temporal_pca_dim": 32,
    "flash_memory_spatial_length": 4,  # DAM: 2 full-resolution temporal patches (the 2 heaviest clusters)
    "flash_memory_spatial_method": "klarge_retrieve",
}

VISION_CONFIG = {
    "depth": 2,
    "embed_dim": 32,
    "hidden_size": 64,  # merger output = LLM hidden size
    "hidden_act": "quick_gelu",
    "mlp_ratio": 4,
    "num_heads": 2,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}

TEXT_CONFIG = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},  # sums to head_dim/2 = 8
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "sliding_window": 4096,
    "max_window_layers": 2,
    "attention_dropout": 0.0,
    "bos_token_id": BOS,
    "eos_token_id": IM_END,
    "vision_start_token_id": VISION_START,
    "vision_end_token_id": VISION_END,
    "vision_token_id": VISION_TOKEN,
    "image_token_id": IMAGE_TOKEN,
    "video_token_id": VIDEO_TOKEN,
}

# Image processor settings of Qwen2-VL-7B-Instruct's preprocessor_config.json (only min_pixels matters
# for frames this small).
PROCESSOR_KWARGS = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                        "merge_size": 2}

WEIGHT_SEED = 20240607
TOKEN_SEED = 7
FRAME_SEED = int(os.environ.get("FIXTURE_FRAME_SEED", "12"))
MAX_NEW_TOKENS = 8

# name, raw (H, W) of the committed uint8 frames, scene lengths in frames (sum = number of frames),
# forward/generate seed. K = 2 and t = 4 at 8 frames: a 2-member cluster would make the DAM choice a
# coin toss (its centroid is the midpoint of two frames), so the scenes make that video split 1 + 3.
VIDEO_CASES = [
    ("video_1f", (60, 60), [1], 1001),  # -> 56x56, tiled to 2 frames, t=1: no clustering, DAM = all
    ("video_2f", (120, 60), [2], 1002),  # -> 112x56, t=1: no clustering, DAM = the whole video
    ("video_8f", (64, 120), [2, 6], 1008),  # -> 56x112, t=4 > K: clustering and retrieval
    ("video_40f", (60, 60), [8, 12, 6, 14], 1040),  # -> 56x56, t=20: clustering and retrieval
]
TEXT_SEED = 1000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", required=True, help="path of the original's Flash-VStream-Qwen folder")
    p.add_argument("--out", required=True, help="fixture folder (wiped and rewritten)")
    p.add_argument("--no-check-fp64", dest="check_fp64", action="store_false")
    return p.parse_args()


# ----------------------------------------------------------------------------------------------------
def make_frames(scenes, hw, rng):
    """Smooth synthetic frames: scenes (a colour gradient each) with a moving square and mild noise."""
    h, w = hw
    num = sum(scenes)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n_scenes = len(scenes)
    scene_of = np.repeat(np.arange(n_scenes), scenes)
    bases = []
    for _ in range(n_scenes):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        ang = rng.uniform(0, np.pi)
        ramp = (np.cos(ang) * yy / h + np.sin(ang) * xx / w)
        ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
        bases.append(c0[None, None] * (1 - ramp[..., None]) + c1[None, None] * ramp[..., None])
    frames = []
    for i in range(num):
        img = bases[scene_of[i]].copy()
        side = max(6, min(h, w) // 4)
        cy = int((h - side) * (0.5 + 0.45 * np.sin(i * 0.7)))
        cx = int((w - side) * (0.5 + 0.45 * np.cos(i * 0.4)))
        img[cy:cy + side, cx:cx + side] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        frames.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return np.stack(frames)  # [T, H, W, 3] uint8


def init_weights(model):
    """Random weights rounded to bf16-representable fp32 values (exact dtype round trips)."""
    g = torch.Generator().manual_seed(WEIGHT_SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("embed_tokens.weight"):
                v = torch.randn(p.shape, generator=g)
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                v = torch.randn(p.shape, generator=g) / fan_in ** 0.5
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            else:  # norm weights
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def chat_ids(rng, n_video_tokens):
    """A Qwen2-VL chat prompt with random 'word' ids:
    <im_start> sys.. <im_end> nl <im_start> user nl [<vision_start> <video_pad>*N <vision_end>] q.. <im_end> nl
    <im_start> assistant nl"""
    def words(n):
        return rng.integers(0, TEXT_VOCAB, n).tolist()
    nl = [198 % TEXT_VOCAB]
    ids = [IM_START] + words(4) + [IM_END] + nl + [IM_START] + words(1) + nl
    if n_video_tokens:
        ids += [VISION_START] + [VIDEO_TOKEN] * n_video_tokens + [VISION_END]
    ids += words(6) + [IM_END] + nl + [IM_START] + words(1) + nl
    return torch.tensor([ids], dtype=torch.long)


def margins(logits_rows):
    top2 = torch.topk(logits_rows.double(), 2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]).tolist()


class Recorder:
    """Records what the original's vision tower / memory compute, without changing it."""

    def __init__(self, model):
        self.model = model
        self.reset()
        fm = model.visual.flash_memory
        self._tc, self._se = fm.temporal_compress, fm.spatial_enhance

        def temporal_compress(*a, **k):
            out = self._tc(*a, **k)
            _x, thw, w, ts, ind = out
            self.rec["csm_thw"] = thw.clone()
            self.rec["csm_weights"] = torch.as_tensor(w).detach().clone().float()
            self.rec["csm_timestamps"] = torch.as_tensor(ts).detach().clone().float()
            self.rec["csm_members"] = [list(map(int, m)) for m in ind]
            return out

        def spatial_enhance(*a, **k):
            out = self._se(*a, **k)
            self.rec["dam_thw"] = out[1].clone()
            self.rec["dam_positions"] = out[2].clone()
            return out

        fm.temporal_compress = temporal_compress
        fm.spatial_enhance = spatial_enhance
        fm.register_forward_hook(self._fm_hook)
        model.visual.register_forward_hook(self._vis_hook)
        self._randperm = torch.randperm

    def _fm_hook(self, mod, inputs, output):
        self.rec["vit_hidden"] = inputs[0].detach().clone()
        self.rec["memory_hidden"] = output[0].detach().clone()

    def _vis_hook(self, mod, inputs, output):
        self.rec["video_embeds"] = output[0].detach().clone()

    def reset(self):
        self.rec = {}
        self.randperms = []

    @contextlib.contextmanager
    def capture(self):
        self.reset()
        orig = torch.randperm

        def randperm(*a, **k):
            r = orig(*a, **k)
            self.randperms.append(r.clone())
            return r

        torch.randperm = randperm
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                yield
        finally:
            torch.randperm = orig
            self.stdout = buf.getvalue()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def main():
    args = parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.abspath(args.original))
    with contextlib.redirect_stdout(io.StringIO()):
        import transformers
        from models.vstream_qwen2vl_model import (
            FlashVStreamQwen2VLConfig,
            FlashVStreamQwen2VLModel,
            get_real_grid_thw,
            get_spatial_real_grid_thw,
        )
        from models.vstream_qwen2vl_processor import FlashVStreamQwen2VLImageProcessor
    transformers.logging.set_verbosity_error()

    out = os.path.abspath(args.out)
    ckpt = os.path.join(out, "checkpoint")
    os.makedirs(out, exist_ok=True)
    # Remove what an earlier run wrote; README.md and .gitignore (hand-written) stay.
    shutil.rmtree(ckpt, ignore_errors=True)
    for f in os.listdir(out):
        if f.endswith(".safetensors") or f == "meta.json":
            os.remove(os.path.join(out, f))

    # ---- checkpoint -------------------------------------------------------------------------------
    vision_config = dict(VISION_CONFIG, flash_memory_config=dict(FLASH_MEMORY_CONFIG))
    config = FlashVStreamQwen2VLConfig(vision_config=vision_config, **TEXT_CONFIG)
    config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    with contextlib.redirect_stdout(io.StringIO()):
        model = FlashVStreamQwen2VLModel(config)
    init_weights(model)
    ref_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(torch.bfloat16)
    model.config.torch_dtype = torch.bfloat16
    model.save_pretrained(ckpt, safe_serialization=True)
    # The original reads its image processor from Qwen2-VL-7B-Instruct (a plain Qwen2VLImageProcessor
    # config; `additional_pool_size=2` is passed per call, never saved): save that kind of config.
    from transformers import Qwen2VLImageProcessor
    Qwen2VLImageProcessor(**PROCESSOR_KWARGS).save_pretrained(ckpt)
    image_processor = FlashVStreamQwen2VLImageProcessor(**PROCESSOR_KWARGS)
    del model

    with contextlib.redirect_stdout(io.StringIO()):
        model = FlashVStreamQwen2VLModel.from_pretrained(ckpt, torch_dtype=torch.float32,
                                                         attn_implementation="eager")
    model.eval()
    loaded = model.state_dict()
    assert set(loaded) == set(ref_state), (set(loaded) ^ set(ref_state))
    assert all(torch.equal(loaded[k], ref_state[k]) for k in ref_state), "bf16 round trip not exact"
    rec = Recorder(model)
    fmc = model.config.vision_config.flash_memory_config

    meta = {
        "about": "Made by scripts/qwen2vl_fixtures/make_fixtures.py running the original Flash-VStream-Qwen code.",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version(), "numpy": np.__version__},
        "original_sha256": {f: sha256_file(os.path.join(args.original, "models", f))
                            for f in sorted(os.listdir(os.path.join(args.original, "models"))) if f.endswith(".py")},
        "threads": 1,
        "load": {"dir": "checkpoint", "dtype": "float32", "attn_implementation": "eager"},
        "tiny_config": {"vision": VISION_CONFIG, "text": TEXT_CONFIG, "flash_memory_config": FLASH_MEMORY_CONFIG,
                        "processor": PROCESSOR_KWARGS, "checkpoint_dtype": "bfloat16",
                        "weight_init": "randn/sqrt(fan_in) for matrices, randn for embed_tokens, 0.1*randn biases, "
                                       f"1+0.1*randn norms, seed {WEIGHT_SEED}, rounded to bf16"},
        "max_new_tokens": MAX_NEW_TOKENS,
        "cases": {},
    }

    tok_rng = np.random.default_rng(TOKEN_SEED)
    frame_rng = np.random.default_rng(FRAME_SEED)

    # ---- text only ----------------------------------------------------------------------------------
    input_ids = chat_ids(tok_rng, 0)
    attention_mask = torch.ones_like(input_ids)
    pos_rope, deltas = model.get_rope_index(input_ids, None, None, attention_mask)
    with torch.no_grad(), rec.capture():
        torch.manual_seed(TEXT_SEED)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        torch.manual_seed(TEXT_SEED)
        gen = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=MAX_NEW_TOKENS,
                             do_sample=False, output_scores=True, return_dict_in_generate=True)
    new_tokens = gen.sequences[:, input_ids.shape[1]:]
    scores = torch.stack(gen.scores, dim=1)
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "logits": logits,
               "generated_tokens": new_tokens, "generate_scores": scores,
               "position_ids": pos_rope.contiguous(), "rope_deltas": deltas.contiguous()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "text_only.safetensors"))
    meta["cases"]["text_only"] = {
        "file": "text_only.safetensors", "seed": TEXT_SEED, "seq_len": input_ids.shape[1],
        "generated_tokens": new_tokens[0].tolist(),
        "eos_generated": bool((new_tokens == IM_END).any()),
        "logit_margin_last": margins(logits[0, -1]),
        "generate_min_margin": min(margins(scores[0])),
    }
    print(f"text_only: L={input_ids.shape[1]} tokens={new_tokens[0].tolist()}", flush=True)
    write_meta(out, meta)  # partial, so the first case is usable at once

    # ---- videos -------------------------------------------------------------------------------------
    all_frames = {}
    for name, hw, scenes, seed in VIDEO_CASES:
        nframes = sum(scenes)
        frames = make_frames(scenes, hw, frame_rng)
        all_frames[name] = frames
        with contextlib.redirect_stdout(io.StringIO()):
            proc = image_processor(images=None, videos=[list(frames)], return_tensors="pt", additional_pool_size=2)
        pixel_values_videos = proc["pixel_values_videos"]
        video_grid_thw = proc["video_grid_thw"]
        thw = video_grid_thw[0]
        csm_grid = get_real_grid_thw(thw, fmc)
        dam_grid = get_spatial_real_grid_thw(thw, fmc)
        n_csm, n_dam = int(csm_grid.prod() // 4), int(dam_grid.prod() // 4)
        input_ids = chat_ids(tok_rng, n_csm + n_dam)
        attention_mask = torch.ones_like(input_ids)
        visual_position_ids = torch.full_like(input_ids, -1)
        vmask = input_ids == VIDEO_TOKEN
        visual_position_ids[vmask] = torch.arange(int(vmask.sum()))

        pos_rope, deltas = model.get_rope_index(input_ids, None, video_grid_thw, attention_mask)
        pos_am = pos_rope.clone()  # the forward overwrites the video part of this tensor in place
        with torch.no_grad(), rec.capture():
            torch.manual_seed(seed)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos_am,
                           pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
                           visual_position_ids=visual_position_ids).logits
        fwd = dict(rec.rec)
        fwd_randperms = list(rec.randperms)
        kmeans_iters = rec.stdout.count("efficient_euclidean_distance")
        with torch.no_grad(), rec.capture():
            torch.manual_seed(seed)
            gen = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                 pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
                                 visual_position_ids=visual_position_ids, max_new_tokens=MAX_NEW_TOKENS,
                                 do_sample=False, output_scores=True, return_dict_in_generate=True)
        assert torch.equal(rec.rec["dam_positions"], fwd["dam_positions"])
        new_tokens = gen.sequences[:, input_ids.shape[1]:]
        scores = torch.stack(gen.scores, dim=1)
        assert torch.equal(scores[:, 0], logits[:, -1]), "generate's first step differs from the forward"

        t = int(thw[0])
        labels = torch.full((t,), -1, dtype=torch.long)
        for ci, members in enumerate(fwd["csm_members"]):
            for m in members:
                labels[m] = ci
        tensors = {
            "input_ids": input_ids, "attention_mask": attention_mask,
            "pixel_values_videos": pixel_values_videos, "video_grid_thw": video_grid_thw,
            "visual_position_ids": visual_position_ids,
            "logits": logits, "generated_tokens": new_tokens, "generate_scores": scores,
            "position_ids_rope": pos_rope, "position_ids": pos_am, "rope_deltas": deltas,
            "vit_hidden": fwd["vit_hidden"], "memory_hidden": fwd["memory_hidden"],
            "video_embeds": fwd["video_embeds"],
            "csm_weights": fwd["csm_weights"], "csm_timestamps": fwd["csm_timestamps"],
            "csm_positions": fwd["csm_timestamps"].round().long(), "csm_labels": labels,
            "dam_positions": fwd["dam_positions"],
        }
        if fwd_randperms:
            tensors["kmeans_randperm"] = fwd_randperms[0]
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, f"{name}.safetensors"))
        w = fwd["csm_weights"]
        case = {
            "file": f"{name}.safetensors", "seed": seed, "frames": nframes, "frames_raw_hw": list(hw),
            "frames_file": "frames.safetensors", "frames_key": name,
            "video_grid_thw": thw.tolist(), "seq_len": input_ids.shape[1],
            "n_video_tokens": n_csm + n_dam, "n_dam_tokens": n_dam, "n_csm_tokens": n_csm,
            "dam_grid_thw": dam_grid.tolist(), "csm_grid_thw": csm_grid.tolist(),
            "clustering_ran": bool(fwd_randperms), "n_randperm_calls": len(fwd_randperms),
            "kmeans_distance_calls": kmeans_iters,
            "retrieval_ran": bool(t > fmc["flash_memory_spatial_length"] // 2),
            "csm_members": fwd["csm_members"], "csm_weights": w.tolist(),
            "csm_timestamps": fwd["csm_timestamps"].tolist(),
            "csm_weight_ties": bool(len(set(w.tolist())) < len(w)),
            "dam_positions": fwd["dam_positions"].tolist(),
            "rope_deltas": int(deltas.flatten()[0]),
            "generated_tokens": new_tokens[0].tolist(),
            "eos_generated": bool((new_tokens == IM_END).any()),
            "logit_margin_last": margins(logits[0, -1]),
            "generate_min_margin": min(margins(scores[0])),
            **distance_gaps(fwd, thw, n_csm, n_dam, fmc),
        }
        if args.check_fp64:
            case["fp64_check"] = fp64_check(model, rec, seed, input_ids, attention_mask, pixel_values_videos,
                                            video_grid_thw, visual_position_ids, pos_rope, fwd, logits, new_tokens)
        meta["cases"][name] = case
        print(f"{name}: thw={thw.tolist()} L={input_ids.shape[1]} dam={n_dam} csm={n_csm} "
              f"members={fwd['csm_members']} dam_pos={fwd['dam_positions'].tolist()} "
              f"tokens={new_tokens[0].tolist()} fp64={case.get('fp64_check')}", flush=True)
        write_meta(out, meta)

    save_file({k: torch.from_numpy(v) for k, v in all_frames.items()}, os.path.join(out, "frames.safetensors"))
    write_meta(out, meta)
    print(f"done in {time.perf_counter() - t_start:.1f} s", flush=True)


def distance_gaps(fwd, thw, n_csm, n_dam, fmc):
    """How far the memory's discrete choices are from a tie, recomputed in float64 from the recorded
    features: k-means (each temporal patch's 2nd-nearest minus nearest returned centroid) and DAM (each
    retrieved centroid's 2nd-nearest minus nearest temporal patch). A gap near 0 is a coin toss."""
    t, h, w = (int(v) for v in thw)
    vit = fwd["vit_hidden"].double()
    small = vit[t * h * w:].reshape(t, -1)
    k = int(fwd["csm_thw"][0])
    cents = fwd["memory_hidden"][0, -n_csm * 4:].double().reshape(k, -1)
    res = {}
    if k > 1 and t > fmc["flash_memory_temporal_length"] // 2:
        d = torch.cdist(small, cents).sort(dim=1).values
        res["kmeans_min_gap"] = float((d[:, 1] - d[:, 0]).min())
    s = fmc["flash_memory_spatial_length"] // 2
    if t > s:
        order = torch.sort(fwd["csm_weights"], descending=True, stable=True).indices[:s]
        d = torch.cdist(cents[order], small).sort(dim=1).values
        res["dam_min_gap"] = float((d[:, 1] - d[:, 0]).min())
    return res


def fp64_check(model, rec, seed, input_ids, attention_mask, pv, thw, vpos, pos_rope, fwd, logits, new_tokens):
    model.double()
    try:
        with torch.no_grad(), rec.capture():
            torch.manual_seed(seed)
            l64 = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos_rope.clone(),
                        pixel_values_videos=pv.double(), video_grid_thw=thw, visual_position_ids=vpos).logits
            r64 = dict(rec.rec)
            torch.manual_seed(seed)
            g64 = model.generate(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pv.double(),
                                 video_grid_thw=thw, visual_position_ids=vpos, max_new_tokens=MAX_NEW_TOKENS,
                                 do_sample=False)
    finally:
        model.float()
    return {
        "same_csm_members": r64["csm_members"] == fwd["csm_members"],
        "same_dam_positions": bool(torch.equal(r64["dam_positions"], fwd["dam_positions"])),
        "same_generated_tokens": bool(torch.equal(g64[:, input_ids.shape[1]:], new_tokens)),
        "max_abs_logit_diff_vs_fp32": float((l64 - logits.double()).abs().max()),
    }


def write_meta(out, meta):
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=False)
        f.write("\n")


if __name__ == "__main__":
    main()
