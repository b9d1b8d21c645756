"""Answers per second when questions about different streams are batched (`answer_together`), on the demo model.

    python -m flash_vstream_hf.benchmarks.batched_answers
    python -m flash_vstream_hf.benchmarks.batched_answers --batch-sizes 1,2,4,8,16 --streams 16 --threads 1

`--streams` synthetic streams of different lengths (so their memories differ, some below the full token count)
are built once with the shipped demo model (`flash_vstream_hf.synthetic.checkpoint.demo_model`, nothing is
downloaded); then, for each batch size, the same `--streams` questions (one per stream) are answered in batches
of that size, greedily, `--rounds` times (batch sizes interleaved, so a burst of load from other processes hits them
alike). Reported: the median answers per second and its ratio to batch size 1, and whether every batch size gave
the same answers as batch size 1.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from ..streaming.answering import StreamSnapshot
from ..streaming.batched_answers import answer_together
from .common import load_average, torch_threads


def build_requests(model, streams: int, seed: int = 0) -> list[tuple[str, StreamSnapshot]]:
    """One question per synthetic stream, the streams 3 to ~120 frames long (different memory token counts)."""
    from ..synthetic import FAMILIES, QuestionMaker, SyntheticStream, ask
    from ..synthetic.batches import pixel_values

    rng = random.Random(seed)
    requests = []
    for index in range(streams):
        length = 3 + (index * 37) % 120
        stream = SyntheticStream(seed + index)
        with torch.inference_mode():
            memory = model.update_memory(pixel_values(stream.frames(0, length))[None])
        question = None
        while question is None:
            question = ask(QuestionMaker(stream), rng.choice(FAMILIES), length - 1, rng)
        requests.append((question.text, StreamSnapshot(memory, stream_time=float(length))))
    return requests


def measure(model, processor, requests, batch_sizes: list[int], rounds: int, new_tokens: int) -> list[dict]:
    kwargs = {"max_new_tokens": new_tokens}
    seconds: dict[int, list[float]] = {size: [] for size in batch_sizes}
    texts: dict[int, list[str]] = {}
    tokens: dict[int, int] = {}

    def run(size: int) -> float:
        start = time.perf_counter()
        answers = []
        for first in range(0, len(requests), size):
            answers += answer_together(model, processor, requests[first : first + size], kwargs)
        elapsed = time.perf_counter() - start
        texts[size] = [a.text for a in answers]
        tokens[size] = sum(a.new_tokens for a in answers)
        return elapsed

    with torch.inference_mode():
        for size in batch_sizes:  # warm-up: first calls pay one-time allocation and dispatch costs
            run(size)
        for round_index in range(rounds):
            for size in batch_sizes if round_index % 2 == 0 else batch_sizes[::-1]:
                seconds[size].append(run(size))
    base = statistics.median(seconds[batch_sizes[0]])
    return [
        {
            "batch_size": size,
            "seconds": statistics.median(seconds[size]),
            "answers_per_s": len(requests) / statistics.median(seconds[size]),
            "ratio": base / statistics.median(seconds[size]),
            "new_tokens": tokens[size],
            "same_answers": texts[size] == texts[batch_sizes[0]],
        }
        for size in batch_sizes
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated batch sizes; the first is the base")
    parser.add_argument("--streams", type=int, default=8, help="streams, one question each (answered per round)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--new-tokens", type=int, default=8, help="max_new_tokens (greedy; rows stop at </s>)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args(argv)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    if min(batch_sizes) < 1 or args.streams < 1 or args.rounds < 1:
        parser.error("batch sizes, --streams and --rounds must be >= 1")

    from ..synthetic.checkpoint import demo_model

    model, processor = demo_model()
    with torch_threads(args.threads):
        requests = build_requests(model, args.streams)
        rows = measure(model, processor, requests, batch_sizes, args.rounds, args.new_tokens)
    token_counts = sorted({s.memory.get_seq_length() for _, s in requests})
    print(
        f"demo model, {args.streams} streams (memory tokens {token_counts}), one question each, greedy, "
        f"max_new_tokens={args.new_tokens}, {args.threads} torch threads, median of {args.rounds} rounds; "
        f"load average at end {load_average()}"
    )
    header = f"{'batch':>5} {'s/round':>8} {'answers/s':>9} {'x batch ' + str(batch_sizes[0]):>10} {'tokens':>6} same"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['batch_size']:>5} {r['seconds']:>8.3f} {r['answers_per_s']:>9.1f} {r['ratio']:>10.2f} "
            f"{r['new_tokens']:>6} {'yes' if r['same_answers'] else 'NO'}"
        )


if __name__ == "__main__":
    main()
