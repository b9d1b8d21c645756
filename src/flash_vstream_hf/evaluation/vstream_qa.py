"""The VStream-QA annotation format (Flash-VStream's benchmark: VS-Ego, VS-Movie, RVS-Ego, RVS-Movie).

The released annotations (`huggingface.co/datasets/IVGSZ/VStream-QA`: `vstream/test_qa_{ego4d,movienet}.json`
for VS-*, `vstream-realtime/test_qa_{ego4d,movienet}.json` for RVS-*) are a JSON list of entries:

    {"id": "...", "video_id": "000246", "question": "...", "answer": "...", "answer_type": "...",
     "start_time": 2450, "end_time": 2510}

- **VS-Ego / VS-Movie** (offline): the question is asked after the whole video.
- **RVS-Ego / RVS-Movie** (real time): the question is asked when the stream reaches `end_time`; the memory then
  holds exactly the frames up to it. `start_time` (where the evidence starts) is kept as metadata.

Times are seconds, or MovieNet shot names (`shot_0042`), which index the frames of a folder of one keyframe per
shot. The clip files (`rvs_ego.json`, `rvs_movie.json`: `video_id`, `start_time`/`end_time` or
`start_shot`/`end_shot` of each clip in its source video) can be given to read question times given in the
source video's timeline: each is then shifted by its clip's start.

This project adds one optional field, `kind` (`"yes_no"`, `"short"` or `"open"`, the default), which says how
an answer is scored; the original tools ignore it. Its synthetic benchmark is exported with it.
"""

from __future__ import annotations

from pathlib import Path

from .annotations import EntryError, entry_problem, parse_time, read_entries, text_field, unique_ids
from .items import KINDS, EvalItem, LoadResult, Problem

DEFAULT_TYPE = "all"  # the summary's group for entries without an answer_type


def load_vstream_qa(path: str | Path, realtime: bool, clips: str | Path | None = None) -> LoadResult:
    """Items of a VStream-QA annotation file: asked at `end_time` when `realtime` (RVS-*), after the whole video
    otherwise (VS-*). `clips`: a clip file whose starts are subtracted from the question times."""
    result = LoadResult()
    offsets = _clip_starts(clips, result.problems) if clips is not None else None
    items = []
    for where, entry in read_entries(path):
        try:
            if isinstance(entry, Exception):
                raise entry
            items.append(_item(entry, where, realtime, offsets))
        except EntryError as error:
            result.problems.append(entry_problem(entry, where, error))
    result.items = unique_ids(items)
    return result


def _item(entry, where: str, realtime: bool, offsets: dict[str, float] | None) -> EvalItem:
    if not isinstance(entry, dict):
        raise EntryError(f"an entry must be a JSON object, got {type(entry).__name__}")
    video = text_field(entry, "video_id", required=False) or text_field(entry, "video", required=False)
    if not video:
        raise EntryError("no 'video_id'")
    kind = text_field(entry, "kind", required=False) or "open"
    if kind not in KINDS or kind == "choice":
        raise EntryError(f"'kind' must be one of yes_no, short, open; got {kind!r}")
    start = parse_time(entry["start_time"], "start_time") if entry.get("start_time") is not None else None
    timestamp = None
    if realtime:
        if entry.get("end_time") is None:
            raise EntryError("no 'end_time': a real-time (RVS) question is asked at its end_time")
        timestamp = parse_time(entry["end_time"], "end_time")
    if offsets is not None:
        if video not in offsets:
            raise EntryError(f"video {video!r} is not in the clip file: its question times cannot be placed")
        shift = offsets[video]
        timestamp = None if timestamp is None else timestamp - shift
        start = None if start is None else start - shift
        if timestamp is not None and timestamp < 0:
            raise EntryError(f"end_time is before its clip's start ({shift} s)")
    return EvalItem(
        id=text_field(entry, "id", required=False) or f"{video}_{where.split()[-1]}",
        video=video,
        question=text_field(entry, "question"),
        reference=text_field(entry, "answer"),
        type=text_field(entry, "answer_type", required=False) or DEFAULT_TYPE,
        kind=kind,
        timestamp=timestamp,
        start_time=start,
    )


def _clip_starts(path: str | Path, problems: list[Problem]) -> dict[str, float]:
    """`{video_id: start}` of a clip file (`start_time`, or `start_shot` for MovieNet)."""
    starts = {}
    for where, entry in read_entries(path):
        try:
            if isinstance(entry, Exception):
                raise entry
            if not isinstance(entry, dict):
                raise EntryError("a clip must be a JSON object")
            video = text_field(entry, "video_id")
            value = entry.get("start_time", entry.get("start_shot"))
            if value is None:
                raise EntryError("no 'start_time' or 'start_shot'")
            starts[video] = parse_time(value, "start_time")
        except EntryError as error:
            problems.append(Problem(f"clip {where}", "annotation", f"{Path(path).name}: {error}"))
    return starts
