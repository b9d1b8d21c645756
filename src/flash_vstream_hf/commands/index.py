"""`flash-vstream index VIDEOS... --out DIR --model M [--fps F --memory-seed S --address ADDR --actors N]`.

Builds one memory file per video (`DIR/<video name>.safetensors`, loadable with `FlashVStreamMemory.load` and
`chat --resume`) on Ray Data: a pool of actors that each load the model once, one GPU per actor where the cluster
has GPUs, a fraction of a CPU otherwise (`flash_vstream_hf.cluster.batch`). Each file holds what one process
builds from that video with the same `--fps` and `--memory-seed` (the `StreamingSession` path, one frame per
vision call), written atomically.

Resumable: memory files already in DIR (complete: they load) are skipped and said so; DIR/index-run.json records
the settings, and a rerun with other settings is refused. A video that cannot be read is reported on stderr and
in DIR/index-errors.json, and the others go on. Two videos with the same name (`a/clip.mp4`, `b/clip.mp4`) are
refused before anything runs. `--address` joins a running Ray cluster (DIR and the videos must then be paths
every node sees); by default a local one is started and shut down at the end.

Exit status: 0 when every video has its memory file, 1 when some failed, 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .arguments import FPS, POSITIVE, SEED, text
from .common import TINY, ModelLoadError, add_model_arguments, check_model_folder

USAGE_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", type=text("video"),
                        help="video files (or folders of frames) to build memories of")  # fmt: skip
    parser.add_argument("--out", required=True, type=text("output folder"), help="folder for the memory files")
    group = parser.add_argument_group("memory")
    group.add_argument("--fps", type=FPS, default=1.0, help="frames sampled per second of video (default 1)")
    group.add_argument("--frame-rate", type=FPS, default=1.0, help="frames per second of frame folders (default 1)")
    group.add_argument(
        "--backend", choices=("decord", "pyav"), help="video file decoder (default: the first installed)"
    )
    group.add_argument("--memory-seed", type=SEED, default=None,
                       help="seed of the memory's k-means generator (default: the model config's memory_seed)")  # fmt: skip
    cluster = parser.add_argument_group("cluster (Ray)")
    cluster.add_argument("--address", type=text("Ray address"),
                         help="join this Ray cluster (e.g. ray://head:10001 or head:6379; default: start a local one)")  # fmt: skip
    cluster.add_argument("--actors", type=POSITIVE,
                         help="model actors (default: one per GPU of the cluster, else one per 2 CPUs)")  # fmt: skip
    add_model_arguments(parser)


def check_arguments(args: argparse.Namespace) -> None:
    """Names that collide, and an output that is not a folder, are refused before Ray starts."""
    from ..cluster.batch.memories import memory_names

    memory_names(args.videos)  # ValueError naming both videos
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file, not a folder")


def settings_of(args: argparse.Namespace) -> dict:
    model = args.model if args.model == TINY or not os.path.exists(args.model) else os.path.abspath(args.model)
    return {"model": model, "dtype": args.dtype, "load_in_4bit": args.load_in_4bit, "fps": args.fps,
            "frame_rate": args.frame_rate, "backend": args.backend, "memory_seed": args.memory_seed}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..cluster.batch.index import index_videos
    from ..cluster.batch.memories import check_settings, write_errors
    from ..cluster.batch.pool import RayMissingError

    if args.model != TINY and os.path.exists(args.model):
        try:  # before Ray and the actors: a model that cannot load would fail every one of them
            check_model_folder(args.model)
        except ModelLoadError as error:
            print(f"flash-vstream index: error: {error}", file=sys.stderr)
            return 1
    out = Path(args.out)
    settings = settings_of(args)
    mismatch = check_settings(out, settings)
    if mismatch:
        print(f"error: {out} holds memories built with other settings ({mismatch}); use another --out, or delete "
              "it to start over", file=sys.stderr)  # fmt: skip
        return USAGE_ERROR
    model_options = {"model": settings["model"], "device": args.device, "dtype": args.dtype,
                     "load_in_4bit": args.load_in_4bit}  # fmt: skip
    build_options = {"fps": args.fps, "seed": args.memory_seed, "frame_rate": args.frame_rate, "backend": args.backend}
    try:
        summary = index_videos(args.videos, out, model_options, build_options, address=args.address,
                               actors=args.actors, on_result=_print_result)  # fmt: skip
    except ValueError as error:  # an actor pool the cluster cannot hold
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except RayMissingError as error:
        print(f"flash-vstream index: error: {error}", file=sys.stderr)
        return 1
    errors = write_errors(out, summary.failed)
    if summary.plan is not None:
        print(f"ray: {summary.plan.describe()}")
    print(summary.line() + (f"; failures in {errors}" if errors else ""))
    return 1 if summary.failed else 0


def _print_result(kind: str, result) -> None:
    if kind == "skipped":
        video, path, frames = result
        print(f"skipped {video}: {path} is already built ({frames} frames)")
    elif kind == "done":
        note = f", {result.frames_failed} unreadable frame(s) skipped" if result.frames_failed else ""
        print(f"done {result.video} -> {result.output} ({result.frames} frames, {result.seconds:.1f} s{note})")
    else:
        print(f"failed {result.video}: {result.error}", file=sys.stderr)
