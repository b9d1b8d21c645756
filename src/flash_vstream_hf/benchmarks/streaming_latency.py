"""Ingest speed and answer latency of a `StreamingSession`, with and without concurrent ingest.

    python -m flash_vstream_hf.benchmarks.streaming_latency                                # both presets, torch's default threads
    python -m flash_vstream_hf.benchmarks.streaming_latency --preset tiny --threads 1,2
    python -m flash_vstream_hf.benchmarks.streaming_latency --preset vstream-7b-shape --llm-layers 2 --dtype float32

Presets (random weights, built on the spot; nothing is downloaded):
- `tiny`: the built-in tiny model (`flash_vstream_hf.tiny`).
- `vstream-7b-shape`: CLIP ViT-L/14-224 vision tower + Vicuna-7B-shaped Llama (hidden 4096, MLP 11008, 32 heads,
  vocab 32064) with `--llm-layers` decoder layers instead of 32 (the full model does not fit or run in reasonable
  time on a small CPU), the released memory config (681 tokens). The tokenizer is the tiny character-level one,
  so the text part of the prompt has more tokens than Vicuna's would; the table gives the prompt length.

For each preset and thread count it measures, on a synthetic video decoded with PyAV/decord at its native rate:
1. ingest alone: frames per second through decode -> CLIP preprocessing -> vision tower -> STAR memory;
2. answers with nothing else running (memory full), `--new-tokens` tokens each: time to first token, total;
3. the same questions while the session ingests as fast as it can, and the ingest rate meanwhile.
The memory is first filled (to its full token count) from random vision features, so every question reads a
full-size memory without spending minutes on the vision tower first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from flash_vstream_hf import FlashVStreamConfig, FlashVStreamForConditionalGeneration, StreamingSession
from flash_vstream_hf.modeling.configuration_flash_vstream import CLIP_VIT_L14_224, VICUNA_7B
from flash_vstream_hf.streaming.answering import build_inputs
from flash_vstream_hf.tiny import tiny_config, tiny_model, tiny_processor, tiny_tokenizer, write_synthetic_video

QUESTION = "What is happening in the video right now?"


def build(preset: str, llm_layers: int, dtype: torch.dtype):
    """`(model, processor, description)` with random weights."""
    if preset == "tiny":
        config = tiny_config()
        return tiny_model(config).to(dtype), tiny_processor(config), "tiny (random)"
    config = FlashVStreamConfig(
        vision_config=dict(CLIP_VIT_L14_224),
        text_config={**VICUNA_7B, "num_hidden_layers": llm_layers},
        video_token_id=tiny_tokenizer().video_token_id,
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the target dtype: no transient fp32 copy
    try:
        torch.manual_seed(0)
        model = FlashVStreamForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default)
    processor = tiny_processor(config)  # the tiny character-level tokenizer, CLIP preprocessing at 224 px
    params = sum(p.numel() for p in model.parameters()) / 1e9
    return model, processor, f"ViT-L/14 + Vicuna-7B shape, {llm_layers}/32 LLM layers ({params:.2f} B params)"


def full_memory(model):
    """A memory at its full token count, filled from random vision features (the vision tower is skipped)."""
    config = model.config
    frames = config.spatial_length + config.temporal_length + 1
    grid = config.patch_grid_size
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, frames, grid * grid, config.vision_config.hidden_size, generator=generator)
    return model.update_memory_from_features(features.to(model.dtype))


def ask_many(session: StreamingSession, count: int) -> list:
    return [session.ask(QUESTION) for _ in range(count)]


def measure(preset: str, threads: int, args: argparse.Namespace, folder: Path) -> dict:
    torch.set_num_threads(threads)
    dtype = getattr(torch, args.dtype)
    model, processor, description = build(preset, args.llm_layers, dtype)
    big = preset != "tiny"
    frames_alone, frames_busy = (args.big_ingest_frames, 300) if big else (args.ingest_frames, 1500)
    questions = args.big_questions if big else args.questions
    max_batch = args.max_batch or (1 if big else 8)
    video = write_synthetic_video(folder / f"{preset}.mp4", num_frames=frames_alone + frames_busy, fps=10,
                                  width=320, height=240)  # fmt: skip
    generation = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False}
    session = StreamingSession(
        model, processor, memory=full_memory(model), generation_kwargs=generation, max_batch=max_batch
    )

    # 1. ingest alone (as fast as possible; every frame of the 10 fps file is sampled)
    session.start(video, fps=10.0)  # includes the one-off warm-up
    start_frames, started = session.status().frames_ingested, time.perf_counter()
    session.wait_for_frames(session.snapshot().frames + frames_alone)
    ingest_alone = (session.status().frames_ingested - start_frames) / (time.perf_counter() - started)
    session.stop()

    # 2. answers with nothing else running
    idle = ask_many(session, questions)

    # 3. answers while ingesting as fast as possible
    session.start(video, fps=10.0)
    session.wait_for_frames(session.snapshot().frames + 1)
    before, started = session.status().frames_ingested, time.perf_counter()
    busy = ask_many(session, questions)
    elapsed = time.perf_counter() - started
    status = session.status()
    ingest_busy = (status.frames_ingested - before) / elapsed
    still_running = session.running
    session.stop()

    prompt_tokens = build_inputs(processor, QUESTION, idle[0].memory_tokens, "cpu")["input_ids"].shape[1]
    return {
        "model": description,
        "dtype": args.dtype,
        "threads": threads,
        "batch": max_batch,
        "memory_tokens": idle[0].memory_tokens,
        "prompt_tokens": prompt_tokens,
        "ingest_alone": ingest_alone,
        "ingest_busy": ingest_busy,
        "ttft_idle": statistics.median(a.time_to_first_token for a in idle),
        "total_idle": statistics.median(a.latency for a in idle),
        "ttft_busy": statistics.median(a.time_to_first_token for a in busy),
        "total_busy": statistics.median(a.latency for a in busy),
        "note": "" if still_running else " (stream ended before the last answer)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", choices=("tiny", "vstream-7b-shape"))
    parser.add_argument("--threads", default=str(torch.get_num_threads()), help="comma-separated torch thread counts")
    parser.add_argument("--llm-layers", type=int, default=2, help="decoder layers of the 7B-shaped LLM (of 32)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--questions", type=int, default=5, help="questions per measurement (median reported)")
    parser.add_argument("--big-questions", type=int, default=3, help="same for the 7B-shaped model")
    parser.add_argument(
        "--max-batch", type=int,
        help="frames per vision call when ingest is behind (default 8 for tiny; 1 for the 7B shape, whose frames "
        "take seconds each on a CPU: rates are then counted frame by frame)",
    )  # fmt: skip
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per answer")
    parser.add_argument("--ingest-frames", type=int, default=600, help="frames for the ingest-alone rate (tiny)")
    parser.add_argument("--big-ingest-frames", type=int, default=6, help="same for the 7B-shaped model")
    args = parser.parse_args()
    presets = args.preset or ["tiny", "vstream-7b-shape"]

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for preset in presets:
            for threads in (int(t) for t in args.threads.split(",")):
                rows.append(measure(preset, threads, args, Path(folder)))
                print_table(rows, args)  # after each row: the big preset takes minutes


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(
        f"\n{args.new_tokens} new tokens per answer, median of {args.questions} questions "
        f"({args.big_questions} for the 7B shape); times in seconds"
    )
    header = (f"{'model':<62} {'dtype':<8} {'thr':>3} {'batch':>5} {'mem tok':>7} {'prompt':>6} {'ingest fps':>10} "
              f"{'+asking':>8} {'TTFT idle':>9} {'total':>7} {'TTFT ingesting':>14} {'total':>7}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<62} {r['dtype']:<8} {r['threads']:>3} {r['batch']:>5} {r['memory_tokens']:>7} "
              f"{r['prompt_tokens']:>6} {r['ingest_alone']:>10.2f} {r['ingest_busy']:>8.2f} {r['ttft_idle']:>9.3f} "
              f"{r['total_idle']:>7.3f} {r['ttft_busy']:>14.3f} {r['total_busy']:>7.3f}{r['note']}")  # fmt: skip


if __name__ == "__main__":
    main()
