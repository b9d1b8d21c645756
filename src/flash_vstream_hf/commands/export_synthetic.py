"""`flash-vstream export-synthetic OUTPUT [--streams 8 --length 100 --per-family 2]`.

Writes this project's synthetic benchmark (held-out streams of the synthetic world, with questions of every
family) in the VStream-QA real-time format: `OUTPUT/test_qa.json`, `OUTPUT/clips.json` and frame folders in
`OUTPUT/videos/`. Evaluate it with `flash-vstream eval OUTPUT/test_qa.json --format rvs --videos OUTPUT/videos`.
"""

from __future__ import annotations

import argparse

from .arguments import POSITIVE, SEED, text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=text("output folder"), help="folder to write the benchmark into")
    parser.add_argument("--streams", type=POSITIVE, default=8, help="held-out streams (videos), seeds 0, 1, ...")
    parser.add_argument("--length", type=POSITIVE, default=100, help="frames per stream (1 per second)")
    parser.add_argument("--per-family", type=POSITIVE, default=2, help="questions per family at each question time")
    parser.add_argument("--first-seed", type=SEED, default=0, help="seed of the first stream (default 0)")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.synthetic_export import export_vstream_qa, synthetic_streams

    streams = synthetic_streams(args.streams, args.length, args.per_family, args.first_seed)
    path = export_vstream_qa(streams, args.output)
    count = sum(len(stream.questions) for stream in streams)
    print(f"wrote {count} questions about {len(streams)} videos: {path}")
    print(
        f"evaluate: flash-vstream eval {path} --format rvs --videos {path.parent / 'videos'} --output RESULTS --model M"
    )
    return 0
