"""Annotation formats of `flash-vstream eval`: VStream-QA (VS/RVS), StreamingBench, OVO-Bench; malformed entries
are reported with their id and skipped, never fatal."""

import json

import pytest

from flash_vstream_hf.evaluation.annotations import AnnotationError, EntryError, parse_time
from flash_vstream_hf.evaluation.frame_folder import FrameFolderSource, frame_files
from flash_vstream_hf.evaluation.multiple_choice import load_ovo_bench, load_streamingbench, option_text
from flash_vstream_hf.evaluation.videos import VideoNotFoundError, find_video

from .eval_helpers import write_frame_folder

RVS = [
    {"id": "a", "video_id": "v1", "question": "Q1?", "answer": "A1", "answer_type": "Object", "start_time": 2430,
     "end_time": 2440},
    {"id": "b", "video_id": "v1", "question": "Q2?", "answer": 3, "answer_type": "Count", "end_time": "shot_0012"},
    {"id": "c", "video_id": "v2", "question": "Q3?", "answer": "yes", "kind": "yes_no", "end_time": "00:01:05"},
]  # fmt: skip


def write(path, value):
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    return path


def test_vstream_qa_realtime_offline_and_clip_offsets(tmp_path):
    from flash_vstream_hf.evaluation.vstream_qa import load_vstream_qa

    path = write(tmp_path / "test_qa.json", RVS)
    rvs = load_vstream_qa(path, realtime=True)
    assert not rvs.problems
    assert [(i.id, i.timestamp, i.type, i.kind) for i in rvs.items] == [
        ("a", 2440.0, "Object", "open"), ("b", 12.0, "Count", "open"), ("c", 65.0, "all", "yes_no")
    ]  # fmt: skip
    assert rvs.items[1].reference == "3" and rvs.items[0].start_time == 2430.0
    vs = load_vstream_qa(path, realtime=False)
    assert all(item.timestamp is None for item in vs.items)  # VS-*: asked after the whole video
    clips = write(tmp_path / "rvs.json", [{"video_id": "v1", "start_time": 2430}, {"video_id": "v2", "start_shot": 5}])
    shifted = load_vstream_qa(path, realtime=True, clips=clips)
    # "b" ends before its clip's start once shifted: reported with its id, the others kept
    assert [p.id for p in shifted.problems] == ["b"]
    assert [(i.id, i.timestamp) for i in shifted.items] == [("a", 10.0), ("c", 60.0)]


def test_malformed_entries_are_reported_with_their_id_and_skipped(tmp_path):
    from flash_vstream_hf.evaluation.vstream_qa import load_vstream_qa

    lines = [json.dumps(RVS[0]), '{"id": "broken", "video_id": "v1", "question": "cut off', json.dumps(RVS[2])]
    lines += [json.dumps({"id": "noend", "video_id": "v1", "question": "Q?", "answer": "x"})]
    lines += [json.dumps({"id": "badtime", "video_id": "v1", "question": "Q?", "answer": "x", "end_time": "soon"})]
    lines += [json.dumps({"video_id": "v1", "answer": "x", "end_time": 3}), json.dumps(["not", "an", "object"])]
    lines += [json.dumps({**RVS[0], "question": "same id again"})]
    result = load_vstream_qa(write(tmp_path / "a.jsonl", "\n".join(lines) + "\n"), realtime=True)
    assert [item.id for item in result.items] == ["a", "c", "a#1"]  # a repeated id is made unique
    problems = {problem.id: problem.message for problem in result.problems}
    assert set(problems) == {"line 2", "noend", "badtime", "line 6", "line 7"}
    assert "not valid JSON" in problems["line 2"] and "end_time" in problems["noend"]
    assert "soon" in problems["badtime"] and "question" in problems["line 6"]


def test_unreadable_annotation_files(tmp_path):
    from flash_vstream_hf.evaluation.vstream_qa import load_vstream_qa

    for text in ("", "just text", '{"no": "list"}'):
        with pytest.raises(AnnotationError):
            load_vstream_qa(write(tmp_path / "bad.json", text), realtime=True)
    with pytest.raises(AnnotationError, match="cannot read"):
        load_vstream_qa(tmp_path / "missing.json", realtime=True)


def test_times():
    assert parse_time(12) == 12.0 and parse_time("1:02:03.5") == 3723.5 and parse_time("shot_0042") == 42
    for bad in ("-1", -1, float("nan"), True, None, "12 s"):
        with pytest.raises(EntryError):
            parse_time(bad)


def test_streamingbench(tmp_path):
    data = [
        {"video_path": "./videos/sample_1.mp4", "questions": [
            {"task_type": "Object Recognition", "question": "What is on the table?", "time_stamp": "00:00:50",
             "answer": "C", "options": ["A. a cup", "B. a pen", "C.a book", "D. nothing"]},
            {"task_type": "Counting", "question": "How many?", "time_stamp": "00:01:10", "answer": "E",
             "options": ["A. 1", "B. 2"]},
        ]},
        {"video_path": "./videos/sample_2.mp4", "questions": "nope"},
    ]  # fmt: skip
    result = load_streamingbench(write(tmp_path / "questions_real.json", data))
    (item,) = result.items
    assert (item.id, item.video, item.timestamp, item.reference) == ("sample_1_0_0", "./videos/sample_1.mp4", 50, "C")
    assert item.options == ("a cup", "a pen", "a book", "nothing") and item.kind == "choice"
    assert {p.id for p in result.problems} == {"sample_1_0_1", "entry 1"}


def test_ovo_bench(tmp_path):
    data = [
        {"id": 7, "task": "EPM", "video": "a.mp4", "question": "Where?", "options": ["kitchen", "garden"], "gt": 1,
         "realtime": 31.5},
        {"id": 8, "task": "REC", "video": "a.mp4", "activity": "jump", "test_info": [{"realtime": 3, "count": 1}]},
        {"id": 9, "task": "OCR", "video": "a.mp4", "question": "Text?", "options": ["x", "y"], "gt": 5,
         "realtime": 3},
    ]  # fmt: skip
    result = load_ovo_bench(write(tmp_path / "ovo.json", data))
    (item,) = result.items
    assert (item.id, item.reference, item.timestamp, item.type, item.options) == (
        "7", "B", 31.5, "EPM", ("kitchen", "garden")
    )  # fmt: skip
    assert len(result.excluded) == 1 and [p.id for p in result.problems] == ["9"]
    assert option_text("(B) x", 1) == "x" and option_text("B. x", 0) == "B. x"


def test_frame_folders_and_finding_videos(tmp_path):
    folder = write_frame_folder(tmp_path / "vid", 12)
    (folder / "notes.txt").write_text("not a frame")
    assert [p.name for p in frame_files(folder)][:3] == ["frame_0000.jpg", "frame_0001.jpg", "frame_0002.jpg"]
    natural = write_frame_folder(tmp_path / "natural", 1)
    for name in ("f10.png", "f2.png", "f1.png"):
        (natural / name).write_bytes(b"")
    assert [p.name for p in frame_files(natural)] == ["f1.png", "f2.png", "f10.png", "frame_0000.jpg"]
    source = FrameFolderSource(folder, fps=0.5)
    source.open()
    frames = list(source.frames())
    assert [f.timestamp for f in frames] == [0, 2, 4, 6, 8, 10] and frames[0].image.shape == (48, 64, 3)
    assert find_video("vid", tmp_path) == folder
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert find_video("clip", tmp_path) == tmp_path / "clip.mp4"
    with pytest.raises(VideoNotFoundError, match="nowhere"):
        find_video("nowhere", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        FrameFolderSource(empty).open()
