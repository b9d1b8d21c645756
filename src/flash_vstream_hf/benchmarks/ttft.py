"""Time to first token vs frames seen: STAR memory, naive full context and the recent window.

TTFT is one `generate(max_new_tokens=1)` call: memory read-out (STAR) or the kept frames (baselines), the
projector, the prefill of the whole prompt and the first token. The prompt is the same text for all methods
(`PROMPT_TOKENS_BEFORE` + `PROMPT_TOKENS_AFTER` tokens around the video tokens). Measurements are interleaved
(every method and size once per round) so a burst of load from other processes hits them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from .baselines import NaiveContext, RecentWindow
from .common import SyntheticFeatureStream, torch_threads
from .progress import progress
from .sizes import PROMPT_TOKENS_AFTER, PROMPT_TOKENS_BEFORE, Sizes

BUILD_CHUNK = 64  # frames per update_memory_from_features call while the STAR memories are built


def prompt_ids(config, before: int, after: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random text ids (BOS first) that are never the `<video>` token."""
    generator = torch.Generator().manual_seed(0)
    high = min(config.video_token_id, config.text_config.vocab_size)
    text = torch.randint(3, high, (before + after,), generator=generator)
    bos = torch.tensor([config.text_config.bos_token_id])
    return torch.cat([bos, text[:before]]), text[before:]


def measure_ttft(model, sizes: Sizes, memory_threads: int, log: Callable[[str], None]) -> dict:
    """Rows `{method, frames_seen, tokens, seconds}` (seconds None where the prompt exceeds the context)."""
    config, layout = model.config, model.star_layout
    before, after = prompt_ids(config, PROMPT_TOKENS_BEFORE, PROMPT_TOKENS_AFTER)
    text_tokens = before.numel() + after.numel()
    context = config.text_config.max_position_embeddings
    naive = NaiveContext(layout, context, text_tokens)
    window = RecentWindow(layout, layout.num_tokens(layout.temporal_length + 2))
    stream = SyntheticFeatureStream(layout.patch_grid_size**2, layout.feature_size)
    frames_list = sorted(set(sizes.ttft_frames) | {naive.max_frames})
    embed = model.get_input_embeddings()
    projector = model.get_multi_modal_projector()
    video_id = config.video_token_id
    pad_id = config.text_config.pad_token_id

    # STAR memories at every size, streamed in chunks through the public API, and the baselines' frames.
    started = time.perf_counter()
    memory, snapshots = None, {}
    naive_frames, window_frames = {}, {}
    building = progress(total=frames_list[-1], desc="Building memories", unit="frame")
    with torch.no_grad(), torch_threads(memory_threads):
        for frames in frames_list:
            while memory is None or memory.frames_seen < frames:
                seen = 0 if memory is None else memory.frames_seen
                memory = model.update_memory_from_features(stream.frames(seen, min(BUILD_CHUNK, frames - seen)), memory)
                building.update(memory.frames_seen - seen)
            snapshots[frames] = memory.snapshot()
            recent = stream.frames(frames - min(frames, window.window), min(frames, window.window))
            window.frames.clear()
            window.add(recent)
            window_frames[frames] = window.tokens()
            if naive.fits(frames):
                naive.frames.clear()
                naive.add(stream.frames(0, frames))
                naive_frames[frames] = naive.tokens()
    building.close()
    log(f"  built memories up to {frames_list[-1]:,} frames in {time.perf_counter() - started:.0f} s")

    def star(frames: int) -> Callable[[], object]:
        ids = torch.cat([before, torch.full((layout.num_tokens(frames),), video_id), after])[None]
        return lambda: model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), video_memory=snapshots[frames],
            max_new_tokens=1, do_sample=False, pad_token_id=pad_id,
        )  # fmt: skip

    def from_tokens(tokens: torch.Tensor) -> Callable[[], object]:
        def run():
            embeds = torch.cat([embed(before), projector(tokens), embed(after)])[None]  # [1, L, D_text]
            mask = torch.ones(embeds.shape[:2], dtype=torch.long)
            return model.generate(
                inputs_embeds=embeds, attention_mask=mask, max_new_tokens=1, do_sample=False, pad_token_id=pad_id
            )

        return run

    cases: dict[tuple[str, int], tuple[int, Callable[[], object] | None]] = {}
    for frames in frames_list:
        cases["star", frames] = (layout.num_tokens(frames), star(frames))
        cases["naive", frames] = (
            naive.tokens_for(frames),
            from_tokens(naive_frames[frames]) if frames in naive_frames else None,
        )
        cases["window", frames] = (window_frames[frames].shape[0], from_tokens(window_frames[frames]))

    times: dict[tuple[str, int], list[float]] = {key: [] for key, (_, fn) in cases.items() if fn is not None}
    timing = progress(total=sizes.ttft_repeats * len(times), desc="Timing TTFT", unit="call")
    with torch.inference_mode():
        cases["star", frames_list[0]][1]()  # warm-up: first calls pay one-time allocation and dispatch costs
        cases["window", frames_list[0]][1]()
        for round_index in range(sizes.ttft_repeats):
            # Alternate the order between rounds: a drift within a round (allocator growth, clocks) would
            # otherwise always land on the largest sizes, which come last.
            keys = list(times) if round_index % 2 == 0 else list(reversed(times))
            for key in keys:
                start = time.perf_counter()
                cases[key][1]()
                times[key].append(time.perf_counter() - start)
                timing.update()
            log(f"  TTFT round {round_index + 1}/{sizes.ttft_repeats} done")
    timing.close()

    rows = []
    for (method, frames), (tokens, _) in cases.items():
        measured = times.get((method, frames))
        rows.append(
            {
                "method": method,
                "frames_seen": frames,
                "tokens": tokens,
                "prompt_tokens": tokens + text_tokens,
                "seconds": statistics.median(measured) if measured else None,
                "samples_s": [round(x, 3) for x in measured] if measured else [],
                **({} if measured else {"note": f"{tokens + text_tokens:,} prompt tokens > {context:,} context"}),
            }
        )
    return {
        "rows": rows,
        "text_tokens": text_tokens,
        "context_length": context,
        "naive_max_frames": naive.max_frames,
        "window_frames": window.window,
    }
