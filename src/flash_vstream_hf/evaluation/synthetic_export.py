"""This project's synthetic benchmark, exported in the VStream-QA (RVS) format, so `flash-vstream eval --format rvs`
runs it like any other benchmark.

The exporter takes a clean description, independent of how the streams are made: `ExportStream`s, each with
its frames (one per second) and its `ExportQuestion`s (id, question, answer, timestamp, type, kind). It writes

    OUTPUT/test_qa.json       the annotations (VStream-QA entries, with `kind` for exact-match scoring)
    OUTPUT/clips.json         one clip per video (video_id, start_time 0, end_time), as rvs_*.json
    OUTPUT/videos/<video_id>/000000.png, ...   frame folders at 1 fps (frame k at k seconds)

`synthetic_streams()` builds that description from the synthetic world (`flash_vstream_hf.synthetic`): held-out
streams (seeds from 0; training uses others), questions of every family asked at frames `L-1, L-6, L-11, L-16`
of a stream of `L` frames: the questions the demo model's own evaluation (`flash-vstream demo --eval`) asks of
the same seeds at length `L`, drawn by its code (`synthetic.evaluation.held_out_questions`). A question asked at
frame `t` has timestamp `t` s: its memory holds frames 0..t. Answers are single words, so they are scored by
exact match (`kind` yes_no or short), no judge needed. `flash-vstream eval` then gives the demo model the scores
its own evaluation gives it with each stream evaluated alone (`tests/test_eval_demo_model.py`); evaluated as a
batch of streams, a STAR memory's k-means initialisation, drawn from one generator for the whole batch, can
change a rare answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ANNOTATIONS = "test_qa.json"
CLIPS = "clips.json"


@dataclass(frozen=True)
class ExportQuestion:
    id: str
    question: str
    answer: str
    timestamp: float  # seconds: asked once the frames up to it are in memory
    type: str  # the summary's group (answer_type)
    kind: str = "short"  # "yes_no", "short" or "open"


@dataclass
class ExportStream:
    """A video as `num_frames` frames at 1 fps (`frame(t)` -> `[H, W, 3]` uint8) and its questions."""

    video_id: str
    num_frames: int
    frame: Callable[[int], np.ndarray]
    questions: list[ExportQuestion] = field(default_factory=list)


def export_vstream_qa(streams: Iterable[ExportStream], output_dir: str | Path, image_format: str = "png") -> Path:
    """Write the streams as a VStream-QA benchmark under `output_dir`; returns the annotation file's path."""
    from PIL import Image

    output_dir = Path(output_dir)
    entries, clips = [], []
    for stream in streams:
        folder = output_dir / "videos" / stream.video_id
        folder.mkdir(parents=True, exist_ok=True)
        for t in range(stream.num_frames):
            Image.fromarray(stream.frame(t)).save(folder / f"{t:06d}.{image_format}")
        clips.append({"video_id": stream.video_id, "start_time": 0, "end_time": stream.num_frames})
        for question in stream.questions:
            if not 0 <= question.timestamp <= stream.num_frames - 1:
                raise ValueError(f"question {question.id} at {question.timestamp} s is outside its video")
            entries.append(
                {
                    "id": question.id,
                    "video_id": stream.video_id,
                    "question": question.question,
                    "answer": question.answer,
                    "answer_type": question.type,
                    "kind": question.kind,
                    "start_time": 0,
                    "end_time": question.timestamp,
                }
            )
    (output_dir / CLIPS).write_text(json.dumps(clips, indent=1) + "\n", encoding="utf-8")
    path = output_dir / ANNOTATIONS
    path.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    return path


def synthetic_streams(
    num_streams: int = 8, length: int = 100, per_family: int = 2, first_seed: int = 0, moments: int = 4
) -> list[ExportStream]:
    """Held-out synthetic streams of `length` frames with their questions (see the module docstring).

    The questions are those the demo model's own evaluation (`flash-vstream demo --eval`,
    `synthetic.evaluation.held_out_questions`) asks at checkpoint length `length`, drawn by the same code from the
    same seeds, so `flash-vstream eval` on this export scores what `evaluate(lengths=(length,), streams=1,
    per_family=per_family, first_seed=seed)` scores on each stream."""
    from ..synthetic import SyntheticStream
    from ..synthetic.evaluation import held_out_questions

    moments = min(moments, (length - 1) // 5 + 1)  # no question before the first frame of a short stream
    streams = []
    for seed in range(first_seed, first_seed + num_streams):
        world = SyntheticStream(seed)
        questions, index = [], {}
        for t, asked in held_out_questions(world, (length,), per_family, moments).items():
            for _, question in asked:
                number = index[t, question.family] = index.get((t, question.family), -1) + 1
                kind = "yes_no" if set(question.options) == {"yes", "no"} else "short"
                questions.append(
                    ExportQuestion(
                        id=f"syn{seed}_t{t}_{question.family}_{number}",
                        question=question.text,
                        answer=question.answer,
                        timestamp=float(t),
                        type=question.family,
                        kind=kind,
                    )
                )
        streams.append(ExportStream(f"synthetic_{seed:04d}", length, world.frame, questions))
    return streams
