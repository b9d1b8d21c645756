"""The index job: one memory file per video, built on Ray Data by a pool of actors that each load the model once
(`MemoryBuilder`), `build_memory_file` per video (`memories.py`: the single-process path, so a file holds the
memory one process makes from that video with the same fps and seed).

Resumable: a video whose memory file is already in the output folder and loads is skipped; a damaged one is
built again. A video that cannot be read is reported (its row says why) and the others go on. Every actor writes
into the output folder itself, so on a cluster of several machines it must be a folder they all see.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from .memories import BuildResult, build_memory_file, complete_memory_file, memory_names
from .pool import ActorPlan, map_rows, plan_actors, ray_cluster


class MemoryBuilder:
    """A Ray Data actor: the model loaded once (`--model`, `--device`, `--dtype`, `--load-in-4bit`, as every
    command loads it), then `build_memory_file` for each row `{video, output}`."""

    def __init__(self, model_options: dict, build_options: dict, threads: int = 1):
        import torch

        from ...commands.common import load_model

        torch.set_num_threads(threads)
        self.model, self.processor = load_model(argparse.Namespace(command="index", **model_options))
        self.build_options = build_options

    def __call__(self, batch: dict) -> dict:
        results = [
            build_memory_file(self.model, self.processor, str(video), str(output), **self.build_options)
            for video, output in zip(batch["video"], batch["output"])
        ]
        return {f.name: [getattr(result, f.name) for result in results] for f in fields(BuildResult)}


@dataclass
class IndexSummary:
    """What one run did: the videos built, skipped (already in the folder) and failed, frames built, wall
    seconds (from the first video sent to the last result, without starting Ray), and the actor pool."""

    done: list[BuildResult] = field(default_factory=list)
    skipped: list[tuple[str, str, int]] = field(default_factory=list)  # (video, memory file, frames)
    failed: list[BuildResult] = field(default_factory=list)
    seconds: float = 0.0
    plan: ActorPlan | None = None

    @property
    def frames(self) -> int:
        return sum(result.frames for result in self.done)

    def line(self) -> str:
        built = len(self.done) + len(self.failed)
        rate = f", {built / self.seconds:.2f} videos/s" if built and self.seconds > 0 else ""
        return (f"index: {len(self.done)} done, {len(self.skipped)} skipped (already built), {len(self.failed)} "
                f"failed; {self.frames} frames in {self.seconds:.1f} s{rate}")  # fmt: skip


def index_videos(
    videos: list[str],
    out: str | Path,
    model_options: dict,
    build_options: dict,
    *,
    address: str | None = None,
    actors: int | None = None,
    on_result: Callable[[str, BuildResult | tuple], None] | None = None,
) -> IndexSummary:
    """Build the memory file of every video in `videos` into `out` (see the module docstring).

    `model_options`: `model`, `device`, `dtype`, `load_in_4bit` (as `commands.common.load_model` takes them);
    `build_options`: `fps`, `seed`, `frame_rate`, `backend` (as `build_memory` takes them). `on_result(kind,
    result)` is called as each video is skipped ("skipped", `(video, file, frames)`) or finishes ("done" or
    "failed", a `BuildResult`). Raises `ValueError` for colliding names or an actor pool the cluster cannot hold.
    """
    out = Path(out).resolve()  # the actors' working folder is not this one
    names = memory_names(videos)
    summary = IndexSummary()
    rows = []
    for video, name in names.items():
        frames = complete_memory_file(out / name)
        if frames is None:
            rows.append({"video": os.path.abspath(video), "output": str(out / name)})
            continue
        summary.skipped.append((video, str(out / name), frames))
        if on_result:
            on_result("skipped", summary.skipped[-1])
    if not rows:
        return summary
    out.mkdir(parents=True, exist_ok=True)
    with ray_cluster(address) as resources:
        summary.plan = plan_actors(actors, resources, work=len(rows))
        began = time.perf_counter()
        for row in map_rows(rows, MemoryBuilder, {"model_options": model_options, "build_options": build_options},
                            summary.plan):  # fmt: skip
            result = BuildResult(**row)
            (summary.done if result.status == "done" else summary.failed).append(result)
            if on_result:
                on_result(result.status, result)
        summary.seconds = time.perf_counter() - began
    return summary
