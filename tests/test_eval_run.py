"""`flash-vstream eval` end to end with the tiny model: answers from the memory as of each timestamp, bad inputs
reported with their ids, an interrupted run resumed to the same result, judged open-ended answers, multiple
choice."""

import json

import pytest
import torch

from flash_vstream_hf.evaluation.frame_folder import read_image
from flash_vstream_hf.evaluation.results import ResultsFile
from flash_vstream_hf.processing import read_video_frames
from flash_vstream_hf.streaming import StreamSnapshot
from flash_vstream_hf.streaming.answering import generate_answer

from .eval_helpers import JudgeServer, read_predictions, run_eval, stable, write_frame_folder, write_videos

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKENS = "6"

RVS = [
    {"id": "c1", "video_id": "clip", "question": "What is moving?", "answer": "a square", "answer_type": "object",
     "end_time": 4},
    {"id": "c2", "video_id": "clip", "question": "Is it red?", "answer": "yes", "answer_type": "colour",
     "kind": "yes_no", "end_time": 2.5},
    {"id": "c3", "video_id": "clip", "question": "What colour?", "answer": "red", "answer_type": "colour",
     "kind": "short", "end_time": 11},
    {"id": "f1", "video_id": "frames", "question": "What is moving?", "answer": "a square", "answer_type": "object",
     "end_time": 5},
    {"id": "f2", "video_id": "frames", "question": "And at the end?", "answer": "nothing", "answer_type": "object",
     "end_time": 8},  # one second after the last frame (7 s): answered from the whole video
]  # fmt: skip


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("videos"))


def write_json(path, value):
    path.write_text(json.dumps(value))
    return str(path)


def eval_args(annotations, videos, output, *extra):
    return [annotations, "--format", "rvs", "--videos", str(videos), "--output", str(output), "--model", "tiny",
            "--max-new-tokens", TOKENS, "--no-progress", *extra]  # fmt: skip


def streamed_answer(model, processor, images, question):
    """The answer of frame-by-frame streaming of `images` into a fresh memory, asked through the same path."""
    memory = None
    with torch.no_grad():
        for image in images:
            pixels = processor.image_processor([image], return_tensors="pt")["pixel_values"][None]
            memory = model.update_memory(pixels, memory)
    kwargs = {"max_new_tokens": int(TOKENS), "do_sample": False}
    return generate_answer(model, processor, question, StreamSnapshot(memory, None), kwargs, 0.0).text


def test_each_question_is_answered_from_the_memory_as_of_its_timestamp(tiny, videos, tmp_path):
    model, processor = tiny
    annotations = write_json(tmp_path / "rvs.json", RVS)
    assert run_eval(eval_args(annotations, videos, tmp_path / "out")) == 0
    records = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert list(records) == ["c2", "c1", "c3", "f1", "f2"]  # in stream order, one pass per video
    clip = [frame.image for frame in read_video_frames(videos / "clip.mp4", fps=1.0)]
    folder = [read_image(path) for path in sorted((videos / "frames").iterdir())]
    expected = {"c1": (clip, 5, 4.0), "c2": (clip, 3, 2.0), "c3": (clip, 12, 11.0), "f1": (folder, 6, 5.0),
                "f2": (folder, 8, 7.0)}  # fmt: skip
    for item_id, (images, frames, stream_time) in expected.items():
        record = records[item_id]
        assert (record["frames_seen"], record["stream_time"]) == (frames, stream_time)
        question = next(entry["question"] for entry in RVS if entry["id"] == item_id)
        assert record["prediction"] == streamed_answer(model, processor, images[:frames], question)
        assert record["latency_s"] >= record["time_to_first_token_s"] > 0
        assert {"id", "video", "question", "reference", "prediction", "timestamp"} <= set(record)
    assert "after the last frame" in records["f2"]["note"] and records["c2"]["exact_match"] is False
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"]["overall"]["questions"] == 5 and summary["rows"]["overall"]["answered"] == 5
    assert set(summary["rows"]) == {"object", "colour", "overall"} and summary["problems"] == []
    assert summary["notes"] == ["open-ended answers are not judged: give --judge-url or --judge-local"]


def test_bad_inputs_are_reported_with_their_ids_and_the_rest_is_answered(videos, tmp_path, capsys):
    bad = write_frame_folder(tmp_path / "videos" / "broken", 1)
    (bad / "frame_0000.jpg").write_bytes(b"not a jpeg")  # an unreadable frame folder
    damaged = write_frame_folder(tmp_path / "videos" / "damaged", 6)
    (damaged / "frame_0002.jpg").write_bytes(b"\xff\xd8 truncated")  # one unreadable frame inside
    (tmp_path / "videos" / "clip.mp4").symlink_to(videos / "clip.mp4")
    lines = [
        {"id": "ok", "video_id": "clip", "question": "What?", "answer": "x", "end_time": 3},
        {"id": "late", "video_id": "clip", "question": "What?", "answer": "x", "end_time": 30},
        {"id": "gone", "video_id": "no_such_video", "question": "What?", "answer": "x", "end_time": 1},
        {"id": "unreadable", "video_id": "broken", "question": "What?", "answer": "x", "end_time": 0},
        {"id": "holes", "video_id": "damaged", "question": "What?", "answer": "x", "end_time": 4},
    ]
    text = [json.dumps(line) for line in lines]
    text.insert(2, '{"id": "torn", "video_id": "clip", "quest')  # a malformed annotation line
    annotations = tmp_path / "rvs.jsonl"
    annotations.write_text("\n".join(text) + "\n")
    assert run_eval(eval_args(str(annotations), tmp_path / "videos", tmp_path / "out")) == 1
    records = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert set(records) == {"ok", "holes"}
    assert records["holes"]["frames_seen"] == 4 and records["holes"]["frames_failed"] == 1  # frames 0, 1, 3, 4
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    stages = {(problem["id"], problem["stage"]) for problem in summary["problems"]}
    assert stages == {("line 3", "annotation"), ("late", "timestamp"), ("gone", "video"),
                      ("unreadable", "video"), (None, "frames")}  # fmt: skip
    messages = {problem["id"]: problem["message"] for problem in summary["problems"]}
    assert "past the end of the video" in messages["late"] and "no_such_video" in messages["gone"]
    assert "cannot decode" in messages["unreadable"] and "not valid JSON" in messages["line 3"]
    assert "skipped annotation: line 3" in capsys.readouterr().err


def test_an_interrupted_run_resumes_to_the_same_result(videos, tmp_path, monkeypatch):
    annotations = write_json(tmp_path / "rvs.json", RVS)
    assert run_eval(eval_args(annotations, videos, tmp_path / "full")) == 0
    full = read_predictions(tmp_path / "full" / "predictions.jsonl")

    append, calls = ResultsFile.append, []

    def killed_on_the_third(self, record):
        calls.append(record["id"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C, or a kill, between two answers
        append(self, record)

    monkeypatch.setattr(ResultsFile, "append", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_eval(eval_args(annotations, videos, tmp_path / "resumed"))
    monkeypatch.setattr(ResultsFile, "append", append)
    path = tmp_path / "resumed" / "predictions.jsonl"
    assert len(path.read_text().splitlines()) == 2
    with open(path, "a") as file:  # and a kill in the middle of writing the next line
        file.write('{"id": "c3", "video": "clip", "question": "What col')
    assert run_eval(eval_args(annotations, videos, tmp_path / "resumed")) == 0
    resumed = read_predictions(path)
    assert len(path.read_text().splitlines()) == 5
    assert {k: stable(v) for k, v in resumed.items()} == {k: stable(v) for k, v in full.items()}
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["written_this_run"] == 3
    assert run_eval(eval_args(annotations, videos, tmp_path / "resumed")) == 0  # all done: nothing is asked
    assert len(path.read_text().splitlines()) == 5
    # other settings would mix two runs in one file: refused
    assert run_eval(eval_args(annotations, videos, tmp_path / "resumed", "--fps", "2")) == 2


def test_open_ended_answers_are_judged_and_cached(videos, tmp_path):
    entries = [{"id": f"vs{i}", "video_id": "clip", "question": f"What happens {i}?", "answer": "a square moves",
                "answer_type": "action"} for i in range(3)]  # fmt: skip
    annotations = write_json(tmp_path / "vs.json", entries)
    args = eval_args(annotations, videos, tmp_path / "out")
    args[args.index("rvs")] = "vs"  # VS-*: asked after the whole video
    with JudgeServer("slow", delay=1.0) as url:  # a judge that times out: reported, predictions kept
        assert run_eval([*args, "--judge-url", url, "--judge-timeout", "0.2", "--judge-retries", "0"]) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {p["stage"] for p in summary["problems"]} == {"judge"} and summary["rows"]["overall"]["answered"] == 3
    records = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert all(record["frames_seen"] == 12 for record in records.values())  # the whole video
    server = JudgeServer()
    with server as url:
        assert run_eval([*args, "--judge-url", url, "--judge-model", "judge-a"]) == 0
        assert server.requests == 3
        assert run_eval([*args, "--judge-url", url, "--judge-model", "judge-a"]) == 0
        assert server.requests == 3  # the rerun costs nothing
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = summary["rows"]["overall"]
    assert (row["judged"], row["judge_accuracy"], row["judge_score"]) == (3, 0.0, 1.0)  # gibberish is wrong
    assert summary["judge"]["model"] == "judge-a" and summary["written_this_run"] == 0
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert [v["id"] for v in verdicts] == ["vs0", "vs1", "vs2"] and all(v["cached"] for v in verdicts)


def test_multiple_choice_streamingbench(videos, tmp_path):
    options = ["A. a red ball", "B. a white square", "C. two cats", "D. nothing"]
    data = [{"video_path": "clip.mp4", "questions": [
        {"task_type": "Object", "question": "What is moving?", "time_stamp": "00:00:03", "answer": "B",
         "options": options},
        {"task_type": "Object", "question": "What is there?", "time_stamp": "00:00:09", "answer": "D",
         "options": options},
    ]}]  # fmt: skip
    annotations = write_json(tmp_path / "sb.json", data)
    args = eval_args(annotations, videos, tmp_path / "out")
    args[args.index("rvs")] = "streamingbench"
    assert run_eval(args) == 0
    records = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert [r["frames_seen"] for r in records.values()] == [4, 10]
    for record in records.values():
        assert len(record["option_logprobs"]) == 4 and record["likelihood_letter"] in "ABCD"
        assert record["correct_likelihood"] == (record["likelihood_letter"] == record["reference"])
        assert "generated_letter" in record and "exact_match" not in record
    row = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]["overall"]
    assert row["choice_likelihood"] is not None and row["choice_generated"] is not None and row["exact_match"] is None
