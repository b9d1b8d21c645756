"""`python -m flash_vstream_hf.benchmarks.batch_index [--videos 8 --seconds 60 --fps 2 --model demo]`: throughput
of `flash-vstream index` (memory files on Ray Data) with 1 and with 2 model actors, on one local Ray.

Synthetic videos (`tiny.write_synthetic_video`, 10 fps, 64x48) are written to a temporary folder and indexed twice
into fresh output folders, once per actor count, by `cluster.batch.index.index_videos` (what the command runs).
The seconds run from the first video handed to Ray Data to the last memory file, so they include the actors'
start (loading the model once each); starting Ray itself is left out. Prints one row per actor count: videos,
frames, seconds, videos/s and frames/s, and the machine's CPU count.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from ..commands.arguments import FPS, POSITIVE

DEMO = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=POSITIVE, default=8, help="videos to index (default 8)")
    parser.add_argument("--seconds", type=POSITIVE, default=60, help="seconds per video (default 60)")
    parser.add_argument("--fps", type=FPS, default=2.0, help="frames sampled per second (default 2)")
    parser.add_argument("--actors", type=POSITIVE, nargs="+", default=[1, 2], help="actor counts (default 1 2)")
    parser.add_argument("--model", default=DEMO, help="demo (the shipped demo model), tiny, or a checkpoint folder")


def measure(args: argparse.Namespace) -> list[dict]:
    """One row per actor count."""
    import ray

    from ..cluster.batch.index import index_videos
    from ..synthetic.checkpoint import demo_model_path
    from ..tiny import write_synthetic_video

    model = str(demo_model_path()) if args.model == DEMO else args.model
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        videos = []
        for index in range(args.videos):
            path = Path(folder) / f"video_{index:03d}.mp4"
            videos.append(write_synthetic_video(path, num_frames=10 * args.seconds, fps=10.0))
        cpus = os.cpu_count() or 1
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
        try:
            for actors in args.actors:
                summary = index_videos(
                    videos,
                    Path(folder) / f"out_{actors}",
                    {"model": model, "device": "cpu", "dtype": "auto", "load_in_4bit": False},
                    {"fps": args.fps, "seed": None, "frame_rate": 1.0, "backend": None},
                    actors=actors,
                )
                if summary.failed:
                    raise RuntimeError(f"{len(summary.failed)} video(s) failed: {summary.failed[0].error}")
                rows.append(
                    {
                        "actors": actors,
                        "plan": summary.plan.describe(),
                        "videos": len(summary.done),
                        "frames": summary.frames,
                        "seconds": summary.seconds,
                        "videos_per_s": len(summary.done) / summary.seconds,
                        "frames_per_s": summary.frames / summary.seconds,
                        "cpus": cpus,
                    }
                )
        finally:
            ray.shutdown()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| actors | videos | frames | seconds | videos/s | frames/s |", "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['actors']} | {row['videos']} | {row['frames']} | {row['seconds']:.1f} | "
            f"{row['videos_per_s']:.2f} | {row['frames_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flash_vstream_hf.benchmarks.batch_index", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    rows = measure(args)
    print(f"flash-vstream index on a local Ray, {rows[0]['cpus']} CPU(s), model {args.model}, {args.videos} videos "
          f"of {args.seconds} s at {args.fps:g} fps")  # fmt: skip
    for row in rows:
        print(f"  {row['actors']} actor(s): {row['plan']}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
