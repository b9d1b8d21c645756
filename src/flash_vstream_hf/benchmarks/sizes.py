"""Benchmark sizes: the full run (README figures) and `--quick` (CI: seconds, every code path, no figures)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Text tokens around the `<video>` placeholder in the TTFT prompt: about the vicuna_v1 system prompt
# ("A chat between a curious user and an artificial intelligence assistant. ... USER:") before it and a short
# question plus " ASSISTANT:" after it, in Llama tokens.
PROMPT_TOKENS_BEFORE = 36
PROMPT_TOKENS_AFTER = 12

MEMORY_LAYOUTS = ("released", "tiny")  # the released model's STAR layout, or the tiny test model's


@dataclass(frozen=True)
class Sizes:
    """What one benchmark run measures. Frame counts are "frames seen" by the memory when it is measured."""

    name: str
    update_frames: tuple[int, ...]  # STAR and recent-window update cost and peak RSS checkpoints (streamed)
    original_frames: tuple[int, ...]  # released-algorithm update cost / peak RSS (its cost grows with frames)
    update_repeats: int  # repeats of each update-cost measurement (median kept)
    original_repeats: int
    ttft_frames: tuple[int, ...]
    ttft_repeats: int
    vision_layers: int  # encoder layers of the ViT-L/14-shaped tower (24 = the real one)
    llm: dict = field(default_factory=dict)  # overrides of the Vicuna-7B text config
    llm_description: str = ""
    ingest_frames: int = 8  # frames timed one at a time (a 1 fps stream)
    ingest_batch: int = 8  # frames timed as one queued batch


FULL = Sizes(
    name="full",
    update_frames=(10, 100, 1_000, 10_000, 100_000),
    original_frames=(10, 100, 1_000),
    update_repeats=6,  # an even count: as many rounds in each order (see update_cost.py)
    original_repeats=2,
    ttft_frames=(16, 64, 256, 1_024, 4_096, 16_384),
    ttft_repeats=4,  # an even count: as many rounds in each order (see ttft.py)
    vision_layers=24,
    llm={"num_hidden_layers": 2},
    llm_description="Vicuna-7B shapes (hidden 4096, MLP 11008, 32 heads, vocab 32064) with 2 of its 32 decoder layers",
    ingest_frames=8,
    ingest_batch=8,
)

QUICK = Sizes(
    name="quick",
    update_frames=(10, 60),
    original_frames=(10, 30),
    update_repeats=1,
    original_repeats=1,
    ttft_frames=(16, 64),
    ttft_repeats=1,
    vision_layers=1,
    llm={
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
    },
    llm_description="tiny Llama (hidden 256, 1 layer; --quick sizes, not Vicuna-7B)",
    ingest_frames=2,
    ingest_batch=2,
)
